"""Articulation on speech no model heard: do the lips close on p, b, m and open on open vowels?

Sentences written for this benchmark (not from the synth generator) are spoken by voices no training
corpus used: espeak-ng voice variants (`--engine espeak`, the default; its phoneme events give exact phone
times), or flite's held-out voice (`--engine flite`: a CMU ARCTIC speaker, `flite -psdur` gives the
times), a synthesiser whose other voices the model may have heard, or festival's held-out voices in
other languages (`--engine intl`: Italian, Czech, Finnish and Catalan voices reading sentences written in
their own language, their phones mapped to radio phones by export/synth/phonesets.py). `--engine festival`
is the odd one out: festival's English voices, which every corpus holds, read the benchmark's sentences (new
sentences, known voices: the set-up of ../shared/RECIPES.md). `--engine grid` is real speech: the pack's GRID
test clips, their words read from their names and timed by aligning festival's voices onto them
(benchmarks/articulation_real.py); their tracked lips are scored too, as `tracked_truth`. Each model's
inner-lip gap is read at every bilabial (smallest gap) and open vowel (largest gap), export/articulation.py.
Peer in the same run: the loudness regressor (louder = more open), fitted on the pack's train split.

`--vocal-tract F` makes other speakers of the same voices: every frequency (formants and pitch) scaled by
F, the duration kept (soxr resampling, then sox's WSOLA tempo; the round trip alone costs a few points).

Usage: kfusion bench articulation [--engine espeak|flite|intl|festival|grid] [--vocal-tract F] [--model ONNX] [--offline-ckpt CKPT]
       [--json PATH] [--plot PNG]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.articulation_sentences import INTL_SENTENCES, SENTENCES
from benchmarks.machine import run_date_utc

REPO = Path(__file__).resolve().parents[1]
# in docs/images, by --engine
PLOT_NAME = {"espeak": "articulation.png", "flite": "articulation_flite.png", "intl": "articulation_intl.png",
             "festival": "articulation_festival.png", "grid": "articulation_grid.png"}
TRUTH = "tracked_truth"  # `--engine grid`: the clip's own tracked lips, scored like a model
PEER = "loudness_regressor"
# espeak-ng voice variants that no training corpus used (checked against export.synth.espeak.VARIANTS at run
# time), each paired with one of the training accents in turn.
HELD_OUT_VARIANTS = ("Alex", "Edward", "Gene", "John", "Lee", "Michel", "Mr_Serious", "Quincy", "Rob", "Zac",
                     "norbert", "shelby", "travis", "victor", "Alicia", "Belinda", "anika", "Andrea")
VOICES_PER_SENTENCE = 2
ENGINES = ("espeak", "flite", "intl", "festival", "grid")
VOCAL_TRACT_RANGE = (0.7, 1.4)
# flite's held-out voice, spoken twice per sentence: as it is, and 10 % slower and 3 semitones higher.
FLITE_RENDITIONS = ((1.0, 0.0), (1.1, 3.0))  # (duration stretch, pitch shift in semitones)
# `--engine festival`: each English training voice as it is, 15 % slower 3 semitones up, 15 % faster 3 down.
FESTIVAL_RENDITIONS = ((1.0, 0.0), (1.15, 3.0), (0.85, -3.0))
# festival's voices come out at levels 13 dB apart (RMS -13 dBFS Italian to -26 dBFS Finnish), so their speech
# is set to the level of the synthetic corpora (export.synth.cli.TARGET_RMS_DBFS).


def add_arguments(p: argparse.ArgumentParser) -> None:
    from export.evaluate import DEFAULT_OFFLINE_CKPT

    p.add_argument("--engine", choices=ENGINES, default="espeak",
                   help="who speaks: espeak-ng variants no corpus used, flite's held-out voice, festival's "
                        "held-out Italian, Czech, Finnish and Catalan voices in their own languages, or festival's "
                        "English voices, which every corpus holds (new sentences only), or real speech: the pack's "
                        "GRID test clips, phones aligned from festival's renditions of their words")
    p.add_argument("--vocal-tract", dest="vocal_tract", type=float, default=1.0,
                   help="scale every frequency of the speech by this factor, duration kept (another speaker; "
                        f"{VOCAL_TRACT_RANGE[0]}-{VOCAL_TRACT_RANGE[1]}, 1 = as spoken)")
    p.add_argument("--model", default=None, help="streaming ONNX model (default: the shipped one)")
    p.add_argument("--offline-ckpt", default=str(DEFAULT_OFFLINE_CKPT),
                   help="bidirectional checkpoint, scored as `offline` when the file exists")
    p.add_argument("--sentences", type=int, default=len(SENTENCES),
                   help=f"score only the first N of the {len(SENTENCES)} sentences (quick checks; with --engine "
                        "intl, the first N of each language's; with --engine grid, the first N clips)")
    p.add_argument("--plot", default=None,
                   help="where to write the gap-trace picture ('' = none; default docs/images/" + PLOT_NAME["espeak"]
                        + ", or articulation_ENGINE.png with another --engine)")
    p.add_argument("--json", default=None, help="write the results as JSON here")


def held_out_voices() -> tuple[str, ...]:
    """'accent+variant' names: unseen variants over the training accents; refuses any variant used in training."""
    from export.synth import espeak

    seen = {v.lower() for v in espeak.VARIANTS}
    overlap = sorted(v for v in HELD_OUT_VARIANTS if v.lower() in seen)
    if overlap:
        raise ValueError(f"held-out variants {overlap} are in the training table espeak.VARIANTS")
    return tuple(f"{espeak.LANGS[i % len(espeak.LANGS)]}+{v}" for i, v in enumerate(HELD_OUT_VARIANTS))


def request_type():
    """espeak-ng's request type narrowed to the held-out voices."""
    from export.synth import espeak

    return type("HeldOutRequest", (espeak.EspeakRequest,),
                {"VOICES": held_out_voices(), "VOICES_NAME": "bench_articulation.HELD_OUT_VARIANTS"})


def held_out_speech(sentences=SENTENCES, voices_per_sentence: int = VOICES_PER_SENTENCE) -> list[dict]:
    """[{text, voice, audio (16 kHz float32), phones}] for every sentence x voices_per_sentence voices."""
    from tqdm import tqdm

    from export.synth import espeak

    req_type = request_type()
    voices = req_type.VOICES
    reqs = [req_type(text, voices[(voices_per_sentence * i + k) % len(voices)])
            for i, text in enumerate(sentences) for k in range(voices_per_sentence)]
    out = []
    for req in tqdm(reqs, desc="espeak-ng held-out speech", unit="utt"):
        (audio, phones), = espeak.synthesize([req])
        out.append({"text": req.text, "voice": req.voice, "audio": audio, "phones": phones})
    return out


def flite_held_out_speech(sentences=SENTENCES) -> list[dict]:
    """[{text, voice, audio, phones}]: every sentence in each FLITE_RENDITIONS of flite's held-out voice(s)."""
    from tqdm import tqdm

    from export.synth import flite

    _check_held_out(flite.HELD_OUT_VOICES, flite.TRAIN_VOICES, "flite.HELD_OUT_VOICES")
    reqs = [flite.FliteRequest(text, voice, stretch, semis) for text in sentences for voice in flite.HELD_OUT_VOICES
            for stretch, semis in FLITE_RENDITIONS]
    out = []
    for req in tqdm(reqs, desc="flite held-out speech", unit="utt"):
        audio, phones = flite.say(req)
        out.append({"text": req.text, "voice": rendition_name(req), "audio": audio, "phones": phones})
    return out


def _check_held_out(held_out: tuple, train: tuple, name: str) -> None:
    if set(held_out) & set(train) or not held_out:
        raise ValueError(f"{name} {held_out} must be non-empty and outside the training voices {train}")


def rendition_name(req) -> str:
    """The voice, with its rate and pitch when they are not the voice's own."""
    if (req.duration_stretch, req.pitch_semitones) == (1.0, 0.0):
        return req.voice
    return f"{req.voice} (x{req.duration_stretch:g}, {req.pitch_semitones:+g} st)"


def intl_held_out_speech(n_sentences: int) -> list[dict]:
    """[{text, voice, audio, phones (radio)}]: each held-out festival voice reads its language's first
    n_sentences INTL_SENTENCES."""
    from export.synth import festival

    held_out = festival.INTL_HELD_OUT_VOICES
    _check_held_out(held_out, festival.INTL_TRAIN_VOICES, "festival.INTL_HELD_OUT_VOICES")
    reqs = [festival.TtsRequest(text, voice) for voice in held_out
            for text in INTL_SENTENCES[festival.INTL_VOICES[voice]][:n_sentences]]
    return _festival_speech(reqs, "festival held-out voices")


def festival_known_voice_speech(sentences=SENTENCES) -> list[dict]:
    """[{text, voice, audio, phones}]: every sentence by each of festival's English (training) voices, in each
    FESTIVAL_RENDITIONS."""
    from export.synth import festival

    reqs = [festival.TtsRequest(text, voice, stretch, semis) for voice in festival.ENGLISH_VOICES
            for stretch, semis in FESTIVAL_RENDITIONS for text in sentences]
    return _festival_speech(reqs, "festival English voices")


def _festival_speech(reqs: list, desc: str) -> list[dict]:
    """Each request through its own festival process, set to the corpora's speech level. One process each on
    purpose: the Czech voices carry state from one utterance to the next within a process, so a batch would
    make an utterance depend on the one before it."""
    from tqdm import tqdm

    from export.synth import festival
    from export.synth.cli import TARGET_RMS_DBFS

    out = []
    with tempfile.TemporaryDirectory(prefix="kfusion-bench-festival-") as tmp:
        for req in tqdm(reqs, desc=desc, unit="utt"):
            (audio, phones), = festival.synthesize([req], Path(tmp))
            audio = audio * (10 ** (TARGET_RMS_DBFS / 20.0) / (float(np.sqrt(np.mean(audio**2))) + 1e-9))
            out.append({"text": req.text, "voice": rendition_name(req),
                        "audio": np.clip(audio, -1.0, 1.0).astype(np.float32), "phones": phones})
    return out


def check_vocal_tract(factor: float) -> float:
    if not VOCAL_TRACT_RANGE[0] <= factor <= VOCAL_TRACT_RANGE[1]:
        raise ValueError(f"--vocal-tract must be in {VOCAL_TRACT_RANGE[0]}..{VOCAL_TRACT_RANGE[1]}, got {factor}")
    return factor


def scale_vocal_tract(audio: np.ndarray, factor: float) -> np.ndarray:
    """16 kHz audio with every frequency scaled by factor and the same duration (phone times still hold)."""
    import soxr

    from export.synth.sox import sox_same_length

    if check_vocal_tract(factor) == 1.0:
        return audio
    fast = soxr.resample(audio, 16000 * factor, 16000).astype(np.float32)  # played factor x as fast
    return sox_same_length(fast, 16000, ["tempo", "-s", f"{1.0 / factor:.5f}"], n_out=len(audio))


def gap_and_events(predict, utt: dict, identity: np.ndarray, fps: int) -> tuple[np.ndarray, list[dict]]:
    """Run one predictor (export.evaluate style: takes a segment-like object) on one utterance. Real speech
    brings its own identity (the tracked face's mean shape) and frame count (its `truth`)."""
    from export.articulation import inner_gap_pct, phone_events

    n = len(utt["truth"]) if "truth" in utt else int(np.ceil(len(utt["audio"]) / 16000 * fps))
    seg = SimpleNamespace(audio=utt["audio"], identity=utt.get("identity", identity),
                          canonical=np.zeros((n, 68, 2), np.float32))
    gap = inner_gap_pct(predict(seg))
    return gap, phone_events(gap, utt["phones"], fps)


def build_models(args, fps: int) -> tuple[dict, dict]:
    """name -> predictor(utterance namespace with audio, identity, canonical); plus info per model."""
    from export.baselines import LoudnessRegressor
    from export.data.pack import PACK_DIR, load_segments
    from export.evaluate import offline_predictor, streaming_predictor

    predict, meta = streaming_predictor(args.model)
    if round(meta.fps) != fps:
        raise ValueError(f"the streaming model runs at {meta.fps} fps, expected {fps}")
    preds = {"streaming": predict}
    info = {"streaming": {"model_version": meta.model_version, "lookahead_ms": meta.lookahead_ms},
            "mean_face": meta.mean_face}
    if args.offline_ckpt and Path(args.offline_ckpt).is_file():
        preds["offline"], _dims, ometa = offline_predictor(args.offline_ckpt)
        info["offline"] = {"model_version": ometa.get("model_version"), "path": str(args.offline_ckpt)}
    else:
        print(f"offline checkpoint {args.offline_ckpt} not found: offline model skipped")
    reg = LoudnessRegressor.fit(load_segments(PACK_DIR, "train", fps), fps, meta.lookahead_ms)
    preds[PEER] = lambda u: reg.predict(u.audio, u.identity, len(u.canonical))
    info[PEER] = {"fit_split": reg.fit_split, "train_clips": len(reg.fitted_on)}
    return preds, info


def plot_traces(utt: dict, gaps: dict, fps: int, out: Path, heard: str = "a voice no model heard") -> None:
    """One utterance: each model's inner-lip gap over time, bilabials shaded red, open vowels blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from export.articulation import BILABIALS, CLOSED_GAP_PCT, OPEN_GAP_PCT, OPEN_VOWELS

    fig, ax = plt.subplots(figsize=(11, 3.6))
    for p, s, e in utt["phones"]:
        if p in BILABIALS or p in OPEN_VOWELS:
            ax.axvspan(s, e, color="tab:red" if p in BILABIALS else "tab:blue", alpha=0.15, lw=0)
            ax.text(0.5 * (s + e), 1.0, p, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    for name, g in gaps.items():
        ax.plot(np.arange(len(g)) / fps, g, label=name, lw=1.6 if name in ("streaming", TRUTH) else 1.0,
                color="black" if name == TRUTH else None)
    ax.axhline(CLOSED_GAP_PCT, color="tab:red", ls=":", lw=0.8)
    ax.axhline(OPEN_GAP_PCT, color="tab:blue", ls=":", lw=0.8)
    ax.set_xlabel("audio time (s)")
    ax.set_ylabel("inner-lip gap (% eye distance)")
    ax.set_title(f"\"{utt['text']}\" ({utt['voice']}, {heard}); red: p b m, blue: open vowels",
                 fontsize=9, pad=14)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run(args) -> int:
    import json

    from export.articulation import (
        CLOSED_GAP_PCT,
        OPEN_GAP_PCT,
        TARGET_CLOSED_FRACTION,
        TARGET_OPENED_FRACTION,
        TARGET_SEPARATION,
        inner_gap_pct,
        phone_events,
        summarise_events,
    )

    if not 1 <= args.sentences <= len(SENTENCES):
        raise ValueError(f"--sentences must be in 1..{len(SENTENCES)}, got {args.sentences}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    fps = 30
    t0 = time.perf_counter()
    engine = getattr(args, "engine", "espeak")
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {ENGINES}, got {engine!r}")
    vocal_tract = check_vocal_tract(float(getattr(args, "vocal_tract", 1.0)))  # before any speech is made
    if engine == "grid":
        from benchmarks.articulation_real import grid_speech

        speech = grid_speech(args.sentences, fps)
    elif engine == "intl":
        speech = intl_held_out_speech(args.sentences)
    elif engine == "festival":
        speech = festival_known_voice_speech(SENTENCES[: args.sentences])
    else:
        speech = (flite_held_out_speech if engine == "flite" else held_out_speech)(SENTENCES[: args.sentences])
    for utt in speech:
        utt["audio"] = scale_vocal_tract(utt["audio"], vocal_tract)
    preds, info = build_models(args, fps)
    mean_face = info.pop("mean_face")
    events = {name: [] for name in preds}
    first_gaps = {}
    voice_events = []
    for k, utt in enumerate(speech):
        for name, predict in preds.items():
            gap, ev = gap_and_events(predict, utt, mean_face, fps)
            events[name] += ev
            if name == "streaming":
                voice_events.append(ev)
            if k == 0:
                first_gaps[name] = gap
    if all("truth" in u for u in speech):  # real speech: its tracked lips at the same phones
        events[TRUTH] = [ev for u in speech for ev in phone_events(inner_gap_pct(u["truth"]), u["phones"], fps)]
        first_gaps[TRUTH] = inner_gap_pct(speech[0]["truth"])
    models = {name: summarise_events(ev) for name, ev in events.items()}
    by_voice = {}  # the streaming model per voice: n, closed and opened fractions
    for utt, ev in zip(speech, voice_events):
        by_voice.setdefault(utt["voice"], []).extend(ev)
    by_voice = {v: {k: summarise_events(ev)[k] for k in ("n_bilabials", "closed_fraction", "opened_fraction")}
                for v, ev in by_voice.items()}
    peer = models[PEER]
    s = models["streaming"]
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"engine": engine, "vocal_tract": vocal_tract, "utterances": len(speech),
                     "sentences": len({u["text"] for u in speech}),
                     "voices": len({u["voice"] for u in speech}),
                     "fps": fps, "closed_gap_pct": CLOSED_GAP_PCT, "open_gap_pct": OPEN_GAP_PCT,
                     "targets": {"closed_fraction": TARGET_CLOSED_FRACTION, "opened_fraction": TARGET_OPENED_FRACTION,
                                 "separation": TARGET_SEPARATION}},
        "date_utc": run_date_utc(),
        "info": info,
        "peer": PEER,
        "models": models,
        "streaming_by_voice": by_voice,
        "ratio_bilabial_gap_over_peer": round(s["bilabial_gap_pct"] / peer["bilabial_gap_pct"], 3),
        "ratio_separation_over_peer": round(s["separation"] / peer["separation"], 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"machine: {out['machine']}")
    print(f"{len(speech)} utterances ({out['settings']['sentences']} sentences, {out['settings']['voices']} "
          f"{'known' if engine == 'festival' else 'unseen'} {'GRID clips' if engine == 'grid' else engine + ' voices'}); "
          f"closed: gap <= {CLOSED_GAP_PCT} %, open: gap >= {OPEN_GAP_PCT} % of the eye distance")
    print(f"{'model':<20} {'closed':>7} {'opened':>7} {'separation':>10} {'p/b/m gap':>9} {'p90':>6} "
          f"{'vowel gap':>9} {'p10':>6} {'closure ms':>10}")
    for name, m in models.items():
        print(f"{name:<20} {m['closed_fraction']:>7.3f} {m['opened_fraction']:>7.3f} {m['separation']:>10.3f} "
              f"{m['bilabial_gap_pct']:>9.2f} {m['bilabial_gap_p90_pct']:>6.2f} {m['open_vowel_gap_pct']:>9.2f} "
              f"{m['open_vowel_gap_p10_pct']:>6.2f} {m['closure_offset_ms']:>10.1f}")
    print(f"streaming vs {PEER}: median p/b/m gap x{out['ratio_bilabial_gap_over_peer']}, separation "
          f"x{out['ratio_separation_over_peer']}; closed {s['closed_fraction']} vs {peer['closed_fraction']}; "
          f"meets targets: {s['meets_targets']}")
    print("streaming by voice: " + ", ".join(f"{v} {b['closed_fraction']} of {b['n_bilabials']}"
                                              for v, b in by_voice.items()))
    plot = REPO / "docs" / "images" / PLOT_NAME[engine] if args.plot is None else args.plot
    out["plot"] = None
    if plot:
        heard = {"festival": "a voice the model trained on, a new sentence",
                 "grid": "real speech, a GRID speaker no model heard"}.get(engine, "a voice no model heard")
        plot_traces(speech[0], first_gaps, fps, Path(plot), heard)
        print(f"plot: {plot}")
        out["plot"] = Path(plot).name  # the report shows docs/images/<name>; set None once a later run draws over it
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0
