"""`kfusion eval` on real pack clips: JSON schema, baselines fitted on train only, targets and report."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from engine.face import MOUTH
from export import evaluate
from export.baselines import LoudnessRegressor, loudness_features, still_face
from export.eval_report import SECTION_BEGIN, SECTION_END, lag_by_source_lines, write_results_section
from export.metrics import METRIC_NAMES


@pytest.fixture(scope="module")
def train_segments(pack_manifest):
    from export.data.pack import load_segments

    return load_segments(split="train", fps=30, progress=False)


@pytest.fixture(scope="module")
def test_segments(pack_manifest):
    from export.data.pack import load_segments

    return load_segments(split="test", fps=30, progress=False)


def test_loudness_regressor_fits_on_train_and_never_sees_test(train_segments, test_segments):
    reg = LoudnessRegressor.fit(train_segments, fps=30)
    assert reg.fit_split == "train"
    assert set(reg.fitted_on) == {s.clip_id for s in train_segments}
    assert not set(reg.fitted_on) & {s.clip_id for s in test_segments}
    with pytest.raises(ValueError, match="'train' split only"):
        LoudnessRegressor.fit(train_segments[:3] + test_segments[:1], fps=30)
    # it learned loud -> open: on unseen test clips its jaw+lip motion follows the true motion
    seg = max(test_segments, key=lambda s: len(s.canonical))
    pred = reg.predict(seg.audio, seg.identity, len(seg.canonical))
    assert pred.shape == seg.canonical.shape
    moved = pred[:, MOUTH, 1].mean(1)
    true = seg.canonical[:, MOUTH, 1].mean(1)
    assert np.corrcoef(moved, true)[0, 1] > 0.2


def test_loudness_features_are_causal(test_segments):
    """Changing audio after a frame's time (+ lookahead) must not change that frame's features."""
    seg = test_segments[0]
    n = len(seg.canonical)
    a = loudness_features(seg.audio, n, 30, lookahead_ms=0.0)
    cut = len(seg.audio) // 2
    noisy = seg.audio.copy()
    noisy[cut:] = np.random.default_rng(0).normal(0, 0.3, len(noisy) - cut)
    b = loudness_features(noisy, n, 30, lookahead_ms=0.0)
    last_clean = cut * 30 // 16000  # frames at or before sample `cut` read only clean audio
    np.testing.assert_array_equal(a[:last_clean], b[:last_clean])
    assert not np.allclose(a[last_clean + 2:], b[last_clean + 2:])


def test_still_face_refuses_a_bad_shape():
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        still_face(np.zeros((67, 2)), 5)


def test_eval_json_on_two_test_clips(tmp_path, pack_manifest):
    """Two real test clips, the shipped ONNX model and the still baselines, JSON schema and a video."""
    from engine.cli import main
    from engine.session import default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"no shipped model at {default_model_path()}")
    out = tmp_path / "eval.json"
    videos = tmp_path / "videos"
    n_videos = 1 if shutil.which("ffmpeg") else 0
    rc = main(["eval", "--split", "test", "--limit", "2", "--models", "streaming,static_face,mean_face",
               "--json", str(out), "--no-report", "--videos", str(videos), "--n-videos", str(n_videos)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["split"] == "test" and res["n_clips"] == 2 and res["frames"] > 60
    assert list(res["models"]) == ["streaming", "static_face", "mean_face"]
    for name, m in res["models"].items():
        assert set(METRIC_NAMES) <= set(m), name
        for k in ("ld", "mouth_ld", "lvd", "mouth_lvd"):
            assert np.isfinite(m[k]) and m[k] > 0, (name, k)
    assert res["models"]["static_face"]["lip_gap_corr"] is None  # a still mouth has no correlation
    # the tracked mid-speech closures, the same for every model; a still face never shuts
    n_closures = {m["closures"] for m in res["models"].values()}
    assert len(n_closures) == 1 and n_closures.pop() >= 3  # these two GRID clips have 5
    assert res["models"]["static_face"]["closures_shut_fraction"] == 0.0
    assert 0.0 <= res["models"]["streaming"]["closures_shut_fraction"] <= 1.0
    # the clip's own identity is closer to its frames than the population mean face
    assert res["models"]["static_face"]["ld"] < res["models"]["mean_face"]["ld"]
    # two still faces have the same velocity error: the truth's own motion
    assert res["models"]["static_face"]["lvd"] == pytest.approx(res["models"]["mean_face"]["lvd"], rel=1e-6)
    assert res["by_source"] and all(set(v) == set(res["models"]) for v in res["by_source"].values())
    assert {c["source"] for c in res["clips"].values()} == set(res["by_source"])
    assert next(t["check"] for t in res["targets"]).startswith("streaming beats every baseline")
    if n_videos:
        (mp4,) = videos.glob("*.mp4")
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
                                str(mp4)], capture_output=True, text=True, check=True).stdout.split()
        assert sorted(probe) == ["audio", "video"]


def _models(s_ld, static_ld, offline_ld=None, r=0.6, lag=0.0):
    base = {"ld": 0.05, "lvd": 0.01, "mouth_lvd": 0.012, "lip_gap_corr": float("nan"), "lip_gap_lag_ms": float("nan")}
    models = {"streaming": {**base, "mouth_ld": s_ld, "mouth_lvd": 0.010, "lip_gap_corr": r, "lip_gap_lag_ms": lag},
              "static_face": {**base, "mouth_ld": static_ld}}
    if offline_ld is not None:
        models["offline"] = {**base, "mouth_ld": offline_ld}
    return models


def test_target_checks_pass_and_fail():
    ok = {c["check"]: c["pass"] for c in evaluate.target_checks(_models(0.07, 0.10, 0.066), fps=30)}
    assert all(ok.values()), ok
    bad = {c["check"]: c["pass"] for c in evaluate.target_checks(_models(0.09, 0.10, 0.07, r=0.6, lag=66.7), 30)}
    assert bad["streaming beats every baseline on mouth_ld"] is True
    assert bad["streaming mouth_ld <= 0.8 x static_face"] is False
    assert bad["streaming mouth_ld within 10% of offline (<= 1.10 x)"] is False
    assert bad["lip_gap_corr >= 0.5 with |lag| <= one frame (33.3 ms)"] is False
    missing = evaluate.target_checks(_models(0.07, 0.10), 30)
    assert missing[-1]["pass"] is None


def test_lag_by_source_table_shows_each_sources_peak():
    models = _models(0.07, 0.10, r=0.44, lag=0.0)
    models["streaming"]["lip_gap_corr_peak"] = 0.44
    late = {**models["streaming"], "lip_gap_corr": 0.22, "lip_gap_corr_peak": 0.36, "lip_gap_lag_ms": 66.7}
    result = {"models": models, "by_source": {"GRID": models, "MEAD": {**models, "streaming": late}}}
    lines = lag_by_source_lines(result)
    assert lines[3] == "| source | streaming |", "the still face has no lip-gap r and gets no column"
    assert "| GRID | 0.44 -> 0.44 @ +0 ms |" in lines
    assert "| MEAD | 0.22 -> 0.36 @ +67 ms |" in lines
    assert lag_by_source_lines({"models": {"static_face": models["static_face"]}, "by_source": {}}) == []


def test_results_section_replaces_only_its_own_text(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# Results\n\n## Latency\nkeep me\n\n{SECTION_BEGIN}\nold numbers\n{SECTION_END}\n\n## Capacity\nme too\n")
    models = {"streaming": {"ld": 0.02, "mouth_ld": 0.03, "lvd": 0.01, "mouth_lvd": 0.012, "lip_gap_corr": 0.6,
                            "lip_gap_lag_ms": 0.0}}
    result = {"split": "test", "fps": 30, "n_clips": 1, "n_segments": 1, "frames": 90, "dropped_clips": [], "models": models,
              "by_source": {"GRID": models}, "clips": {"a": {"source": "GRID"}}, "info": {"skipped": {}},
              "targets": [{"check": "x", "pass": True, "detail": "d"}]}
    write_results_section(path, result, [tmp_path / "eval_quality.png"], evaluate.format_table)
    text = path.read_text()
    assert "old numbers" not in text and "keep me" in text and "me too" in text
    assert text.count(SECTION_BEGIN) == 1 and "| streaming | 2.00 | 3.00 |" in text


def test_whole_clip_scoring_equals_live_streaming(test_segments):
    """The eval runs the ONNX model over a whole clip in one call; a live Stream fed 20 ms chunks agrees."""
    from engine.config import EngineConfig
    from engine.session import ModelSession, default_model_path
    from engine.stream import Stream

    if not default_model_path().is_file():
        pytest.skip(f"no shipped model at {default_model_path()}")
    seg = min(test_segments, key=lambda s: len(s.canonical))
    predict, meta = evaluate.streaming_predictor(None)
    whole = predict(seg)
    session = ModelSession(None, providers="cpu")
    stream = Stream(EngineConfig(fps=int(meta.fps)), session.meta, identity=seg.identity)
    frames = []
    chunk = 320  # 20 ms at 16 kHz
    for i in range(0, len(seg.audio), chunk):
        frames += stream.process(session, seg.audio[i:i + chunk], chunk=i // chunk)
    frames += stream.process(session, final=True)
    live = np.stack([f.landmarks for f in frames])
    assert live.shape == whole.shape
    np.testing.assert_allclose(live, whole, atol=1e-4)


def test_smoothed_truth_oracle_removes_jitter_only():
    t = np.arange(60, dtype=np.float64)
    ramp = np.broadcast_to(t[:, None, None], (60, 68, 2)).copy()
    # a straight-line motion survives the centred average (edges aside); alternating jitter does not
    assert np.allclose(evaluate.smoothed_truth(ramp)[2:-2], ramp[2:-2])
    jitter = np.where(t % 2 == 0, 1.0, -1.0)[:, None, None] * np.ones((60, 68, 2))
    assert np.abs(evaluate.smoothed_truth(jitter)[2:-2]).max() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="odd number"):
        evaluate.smoothed_truth(ramp, 4)
    assert evaluate.ORACLE not in evaluate.ALL_MODELS, "the oracle sees the truth: never a model or baseline"


def test_true_lip_gap_oracle_keeps_the_gap_and_nothing_else(train_segments):
    from engine.face import inner_lip_gap
    from export.data.pack import reference_shape
    from export.metrics import canonicalise, landmark_distance

    ref = reference_shape().astype(np.float64)
    seg = max(train_segments, key=lambda s: len(s.canonical))  # a real face track
    truth = canonicalise(evaluate.truth_track(seg), ref)
    face = evaluate.true_lip_gap_face(evaluate.truth_track(seg), ref)
    assert face.shape == truth.shape
    # the lip opening is the truth's, frame by frame; every point outside the mouth holds still
    np.testing.assert_allclose(inner_lip_gap(face), inner_lip_gap(truth), atol=1e-9)
    rest = np.setdiff1d(np.arange(68), MOUTH)
    assert np.ptp(face[:, rest], axis=0).max() == 0.0
    assert landmark_distance(face, truth, MOUTH) < landmark_distance(still_face(truth.mean(0), len(truth)), truth, MOUTH)
    # a mouth change that the gap does not explain (a widening, uncorrelated with the opening) stays out
    t = np.arange(len(truth))
    widen = np.zeros_like(truth)
    widen[:, [48, 60], 0] = -np.sin(2 * np.pi * t / 7.3)[:, None]  # corners move apart and together
    widen[:, [54, 64], 0] = np.sin(2 * np.pi * t / 7.3)[:, None]
    widened = evaluate.true_lip_gap_face(truth + widen, ref)
    np.testing.assert_allclose(inner_lip_gap(widened), inner_lip_gap(truth + widen), atol=1e-9)
    assert np.abs(widened - face).max() < 0.05 * np.abs(widen).max()
    assert evaluate.ORACLE_GAP not in evaluate.ALL_MODELS, "the oracle sees the truth: never a model or baseline"


def test_results_section_shows_the_oracle_apart_from_the_models(tmp_path):
    path = tmp_path / "RESULTS.md"
    row = {"ld": 0.02, "mouth_ld": 0.03, "lvd": 0.01, "mouth_lvd": 0.012, "lip_gap_corr": 0.6, "lip_gap_lag_ms": 0.0}
    oracle = {**row, "mouth_ld": 0.0086}
    result = {"split": "test", "fps": 30, "n_clips": 1, "n_segments": 1, "frames": 90, "dropped_clips": [],
              "models": {"streaming": row}, "by_source": {"GRID": {"streaming": row}},
              "reference": {"models": {evaluate.ORACLE: oracle}, "note": "sees the answer"},
              "clips": {"a": {"source": "GRID"}}, "info": {"skipped": {}}, "targets": []}
    write_results_section(path, result, [], evaluate.format_table)
    text = path.read_text()
    assert "Reference, not a model (sees the answer)" in text
    assert f"| {evaluate.ORACLE} | 2.00 | 0.86 |" in text
    by_source = text.split("By source")[1]
    assert evaluate.ORACLE not in by_source, "the per-source table lists models only"
