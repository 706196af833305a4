"""Articulation scores (export/articulation.py) and the held-out speech of `kfusion bench articulation`."""

from __future__ import annotations

import ctypes.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.articulation import (
    CLOSED_GAP_PCT,
    OPEN_GAP_PCT,
    inner_gap_pct,
    phone_events,
    separation,
    summarise_events,
)

FPS = 30
needs_espeak = pytest.mark.skipif(ctypes.util.find_library("espeak-ng") is None,
                                  reason="libespeak-ng is not installed")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (Debian package flite)")


def test_events_take_the_extreme_inside_each_phone_and_time_it():
    gap = np.full(60, 8.0)
    gap[14] = 0.5  # the lips shut on frame 14 (0.467 s)
    gap[40] = 16.0  # and open widest on frame 40 (1.333 s)
    phones = [("pau", 0.0, 0.4), ("b", 0.4, 0.5), ("aa", 1.2, 1.4), ("s", 1.4, 1.6), ("m", 1.8, 1.95)]
    ev = phone_events(gap, phones, FPS)
    assert [e["phone"] for e in ev] == ["b", "aa", "m"]  # pauses and other consonants are not scored
    b, aa, m = ev
    assert b["kind"] == "closure" and b["gap_pct"] == 0.5
    assert b["offset_ms"] == pytest.approx(1000 * (14 / FPS - 0.45))  # 17 ms after the phone's middle
    assert aa["kind"] == "opening" and aa["gap_pct"] == 16.0
    assert m["gap_pct"] == 8.0  # nothing shut there


def test_a_phone_reaches_one_frame_beyond_its_edges_and_none_past_the_track():
    gap = np.full(30, 9.0)
    gap[9] = 1.0  # 0.300 s: one frame before a /p/ at 0.31-0.40 s
    ev = phone_events(gap, [("p", 0.31, 0.40)], FPS)
    assert ev[0]["gap_pct"] == 1.0
    gap[9], gap[8] = 9.0, 1.0  # two frames before: out of reach
    assert phone_events(gap, [("p", 0.31, 0.40)], FPS)[0]["gap_pct"] == 9.0
    assert phone_events(gap, [("p", 5.0, 5.1)], FPS) == []  # after the last frame


def test_bad_input_is_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match="1-D"):
        phone_events(np.zeros((3, 2)), [], FPS)
    with pytest.raises(ValueError, match="ends before it starts"):
        phone_events(np.zeros(10), [("p", 0.2, 0.1)], FPS)
    with pytest.raises(ValueError, match=r"\(T, 68, 2\)"):
        inner_gap_pct(np.zeros((5, 20, 2)))


def test_separation_is_the_chance_an_opening_beats_a_closure():
    assert separation(np.array([0.5, 1.0]), np.array([9.0, 12.0])) == 1.0
    assert separation(np.array([9.0, 12.0]), np.array([0.5, 1.0])) == 0.0
    assert separation(np.array([3.0]), np.array([3.0])) == 0.5
    assert separation(np.array([1.0, 6.0]), np.array([5.0])) == 0.5
    assert np.isnan(separation(np.array([]), np.array([5.0])))


def test_summary_counts_closed_and_open_against_the_thresholds():
    ev = ([{"phone": "p", "kind": "closure", "gap_pct": CLOSED_GAP_PCT - 0.1, "offset_ms": -10.0}] * 3
          + [{"phone": "m", "kind": "closure", "gap_pct": CLOSED_GAP_PCT + 0.5, "offset_ms": 20.0}]
          + [{"phone": "aa", "kind": "opening", "gap_pct": OPEN_GAP_PCT + 4, "offset_ms": 0.0}] * 2)
    s = summarise_events(ev)
    assert (s["n_bilabials"], s["n_open_vowels"]) == (4, 2)
    assert s["closed_fraction"] == 0.75 and s["opened_fraction"] == 1.0 and s["separation"] == 1.0
    assert s["by_bilabial"]["p"]["closed_fraction"] == 1.0 and s["by_bilabial"]["m"]["closed_fraction"] == 0.0
    assert s["by_bilabial"]["b"] == {"n": 0, "closed_fraction": None, "median_gap_pct": None}
    assert s["closure_offset_ms"] == -10.0
    assert s["meets_targets"] is False  # 75 % closed is under the 90 % target


def test_speech_closures_are_short_shut_runs_between_openings():
    from export.articulation import CONTEXT_FRAMES, MAX_CLOSURE_FRAMES, shut_at, speech_closures

    gap = np.full(80, 8.0)
    gap[:6] = 0.0  # shut at the start: no opening before it, so not inside speech
    gap[20:23] = 1.0  # a p between two vowels
    gap[40:40 + MAX_CLOSURE_FRAMES + 2] = 0.5  # a long rest, not a bilabial
    gap[60] = CLOSED_GAP_PCT  # one frame, at the threshold
    assert speech_closures(gap) == [(20, 22), (60, 60)]
    quiet = gap.copy()
    quiet[48:] = OPEN_GAP_PCT - 0.1  # no opening after the last one any more
    assert speech_closures(quiet) == [(20, 22)]
    pred = np.full(80, 6.0)
    pred[23] = 1.5  # shuts one frame late: within the slack
    pred[58] = 1.0  # two frames early: missed
    assert shut_at(pred, [(20, 22), (60, 60)]) == 1 and shut_at(pred, []) == 0
    assert CONTEXT_FRAMES * 1000 / FPS > 300  # the openings are looked for within a third of a second
    with pytest.raises(ValueError, match="1-D"):
        speech_closures(np.zeros((4, 2)))


def test_gap_is_in_percent_of_the_eye_distance_for_any_face_size():
    from engine.session import ModelSession, default_model_path

    face = ModelSession(str(default_model_path()), "cpu").meta.mean_face.astype(np.float64)
    g1 = inner_gap_pct(face[None])
    g2 = inner_gap_pct((face * 3.0 + 40.0)[None])
    assert g1.shape == (1,) and g1[0] == pytest.approx(g2[0])


@needs_espeak
def test_held_out_voices_are_unseen_and_the_shipped_model_shuts_and_opens_its_lips():
    """On a voice and sentences no training corpus held: the lips shut on p/b/m and open on open vowels."""
    from benchmarks import bench_articulation as B
    from export.evaluate import streaming_predictor
    from export.synth import espeak

    voices = B.held_out_voices()
    assert len(voices) == len(B.HELD_OUT_VARIANTS)
    assert not {v.split("+")[1].lower() for v in voices} & {v.lower() for v in espeak.VARIANTS}
    predict, meta = streaming_predictor(None)
    events = []
    for utt in B.held_out_speech(B.SENTENCES[:4], voices_per_sentence=1):
        assert utt["voice"] in voices
        events += B.gap_and_events(predict, utt, meta.mean_face, FPS)[1]
    s = summarise_events(events)
    assert s["n_bilabials"] >= 20 and s["n_open_vowels"] >= 10
    assert s["separation"] >= 0.95  # nearly every open vowel is wider than nearly every p/b/m
    assert s["bilabial_gap_pct"] < CLOSED_GAP_PCT < OPEN_GAP_PCT < s["open_vowel_gap_pct"]
    assert s["opened_fraction"] >= 0.9


@needs_espeak
def test_bench_articulation_writes_json_plot_and_report_section(tmp_path, capsys):
    from benchmarks.report import build
    from engine.cli import main

    results = tmp_path / "results"
    assert main(["bench", "articulation", "--sentences", "2", "--offline-ckpt", "", "--json",
                 str(results / "articulation.json"), "--plot", str(tmp_path / "articulation.png")]) == 0
    d = json.loads((results / "articulation.json").read_text())
    assert set(d["models"]) == {"streaming", "loudness_regressor"} and d["settings"]["utterances"] == 4
    assert d["models"]["streaming"]["n_bilabials"] > 5 and (tmp_path / "articulation.png").stat().st_size > 10_000
    assert build(results, tmp_path / "RESULTS.md", tmp_path / "images") == ["articulation"]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| streaming |" in text and "| loudness_regressor |" in text and "articulation.png" in text
    assert main(["bench", "articulation", "--sentences", "0"]) != 0
    assert "--sentences must be in 1..20, got 0" in capsys.readouterr().err


@needs_flite
def test_bench_articulation_with_flite_speaks_only_its_held_out_voice(tmp_path):
    from benchmarks.bench_articulation import flite_held_out_speech
    from benchmarks.report import build
    from engine.cli import main
    from export.synth import flite

    results = tmp_path / "results"
    assert main(["bench", "articulation", "--engine", "flite", "--sentences", "2", "--offline-ckpt", "", "--json",
                 str(results / "articulation-flite.json"), "--plot", str(tmp_path / "flite.png")]) == 0
    d = json.loads((results / "articulation-flite.json").read_text())
    assert d["settings"]["engine"] == "flite" and d["settings"]["utterances"] == 2 * len(flite.HELD_OUT_VOICES) * 2
    s = d["models"]["streaming"]
    assert s["n_bilabials"] > 5 and s["n_open_vowels"] > 3 and s["opened_fraction"] >= 0.9
    assert (tmp_path / "flite.png").stat().st_size > 10_000
    assert build(results, tmp_path / "RESULTS.md", tmp_path / "images") == ["articulation-flite"]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "flite's held-out voice in 2 renditions" in text and "images/flite.png" in text and d["plot"] == "flite.png"
    speech = flite_held_out_speech(("Bob ate.",))
    assert {u["voice"].split()[0] for u in speech} == set(flite.HELD_OUT_VOICES)


@pytest.mark.skipif(shutil.which("festival") is None or not list(Path("/usr/share/festival/voices").glob("*/pc_diphone")),
                    reason="festival's non-English voices are not installed (scripts/debian-packages.txt)")
def test_bench_articulation_intl_speaks_held_out_voices_in_their_languages(tmp_path):
    from benchmarks.bench_articulation import INTL_SENTENCES
    from benchmarks.report import build
    from engine.cli import main
    from export.synth import festival

    results = tmp_path / "results"
    assert main(["bench", "articulation", "--engine", "intl", "--sentences", "1", "--offline-ckpt", "", "--json",
                 str(results / "articulation-intl.json"), "--plot", ""]) == 0
    d = json.loads((results / "articulation-intl.json").read_text())
    held_out = festival.INTL_HELD_OUT_VOICES
    assert d["settings"]["utterances"] == len(held_out) and d["plot"] is None
    assert d["settings"]["sentences"] == len({festival.INTL_VOICES[v] for v in held_out})
    assert set(d["streaming_by_voice"]) == set(held_out) and not set(held_out) & set(festival.INTL_TRAIN_VOICES)
    s = d["models"]["streaming"]
    assert s["n_bilabials"] == sum(b["n_bilabials"] for b in d["streaming_by_voice"].values()) >= 15
    assert s["opened_fraction"] >= 0.9 and d["models"]["loudness_regressor"]["closed_fraction"] < 0.2
    assert build(results, tmp_path / "RESULTS.md", tmp_path / "images") == ["articulation-intl"]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "festival's Italian, Czech, Finnish and Catalan voices" in text and "| upc_ca_ona_hts |" in text
    assert all(len(v) == 10 for v in INTL_SENTENCES.values())


@pytest.mark.skipif(shutil.which("festival") is None, reason="festival is not installed")
def test_bench_articulation_festival_speaks_the_training_voices_in_three_renditions(tmp_path):
    from benchmarks.bench_articulation import FESTIVAL_RENDITIONS
    from benchmarks.report import build
    from engine.cli import main
    from export.synth import festival

    results = tmp_path / "results"
    assert main(["bench", "articulation", "--engine", "festival", "--sentences", "1", "--offline-ckpt", "",
                 "--json", str(results / "articulation-festival.json"), "--plot", str(tmp_path / "f.png")]) == 0
    d = json.loads((results / "articulation-festival.json").read_text())
    n = len(festival.ENGLISH_VOICES) * len(FESTIVAL_RENDITIONS)
    assert d["settings"]["utterances"] == n == len(d["streaming_by_voice"]) and d["settings"]["sentences"] == 1
    assert {v.split()[0] for v in d["streaming_by_voice"]} == set(festival.ENGLISH_VOICES)
    assert d["models"]["streaming"]["n_bilabials"] >= 5 * n and d["plot"] == "f.png"
    assert build(results, tmp_path / "RESULTS.md", tmp_path / "images") == ["articulation-festival"]
    assert "every training corpus holds these voices" in (tmp_path / "RESULTS.md").read_text()


@needs_flite
def test_shipped_model_shuts_its_lips_for_flites_unseen_voice():
    """The closures the flite corpus bought (stage 23; the model card): on the first 8 sentences in flite's held-out
    voice the shipped model shuts on 88 % of 116 p, b, m; stage 6, before any flite voice, shut on 77 %."""
    from benchmarks import bench_articulation as B
    from export.evaluate import streaming_predictor

    predict, meta = streaming_predictor(None)
    events = []
    for utt in B.flite_held_out_speech(B.SENTENCES[:8]):
        events += B.gap_and_events(predict, utt, meta.mean_face, FPS)[1]
    s = summarise_events(events)
    assert s["n_bilabials"] >= 100 and s["opened_fraction"] >= 0.95 and s["separation"] >= 0.99
    assert s["closed_fraction"] >= 0.85, s["by_bilabial"]


def test_vocal_tract_scaling_keeps_the_length_and_raises_every_frequency(speech_16k):
    from benchmarks.bench_articulation import scale_vocal_tract

    def centroid_hz(x):
        spec = np.abs(np.fft.rfft(x)) ** 2
        return float((np.fft.rfftfreq(len(x), 1 / 16000) * spec).sum() / spec.sum())

    up = scale_vocal_tract(speech_16k, 1.15)
    assert len(up) == len(speech_16k) and up.dtype == np.float32
    ratio = centroid_hz(up) / centroid_hz(speech_16k)
    print(f"spectral centroid x{ratio:.3f} after scaling by 1.15")
    assert 1.08 < ratio < 1.22
    assert scale_vocal_tract(speech_16k, 1.0) is speech_16k
    with pytest.raises(ValueError, match=r"--vocal-tract must be in 0.7..1.4, got 2.0"):
        scale_vocal_tract(speech_16k, 2.0)


@pytest.mark.skipif(shutil.which("festival") is None, reason="festival is not installed")
def test_bench_articulation_grid_scores_real_speech_and_its_tracked_lips(tmp_path):
    """Real GRID recordings from the pack's test split, phones aligned from festival: the models and the clip's
    own tracked lips are scored at the same phones."""
    from benchmarks.bench_articulation import TRUTH
    from benchmarks.report import build
    from engine.cli import main

    results = tmp_path / "results"
    assert main(["bench", "articulation", "--engine", "grid", "--sentences", "4", "--offline-ckpt", "",
                 "--json", str(results / "articulation-grid.json"), "--plot", str(tmp_path / "g.png")]) == 0
    d = json.loads((results / "articulation-grid.json").read_text())
    assert d["settings"]["utterances"] == 4 == len(d["streaming_by_voice"])
    assert all(v.startswith("grid_") for v in d["streaming_by_voice"])
    truth, s = d["models"][TRUTH], d["models"]["streaming"]
    assert truth["n_bilabials"] == s["n_bilabials"] >= 4 and truth["n_open_vowels"] == s["n_open_vowels"] >= 4
    # the phone times hold: the tracked lips are wider at open vowels than at p, b, m
    assert truth["separation"] >= 0.9 and truth["open_vowel_gap_pct"] > OPEN_GAP_PCT
    assert d["models"]["loudness_regressor"]["n_bilabials"] == s["n_bilabials"]
    assert (tmp_path / "g.png").stat().st_size > 10_000
    assert build(results, tmp_path / "RESULTS.md", tmp_path / "images") == ["articulation-grid"]
    text = (tmp_path / "RESULTS.md").read_text()
    assert f"| {TRUTH} |" in text and "GRID sentences" in text and "real speech" in text
