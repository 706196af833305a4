"""Evaluate the shipped streaming model, the offline model and baselines on a split of the pack.

Usage: kfusion eval [--split test] [--json benchmarks/eval_test.json] [--offline-ckpt PATH]
Metrics (export/metrics.py) are computed in the canonical frame, per clip, then averaged over clips.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from engine.cache import cache_dir

log = logging.getLogger("kfusion.eval")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OFFLINE_CKPT = cache_dir("train", "offline_ft", "best.pt")  # the offline model MODEL_CARD.md reports
DEFAULT_VIDEOS_DIR = cache_dir("eval", "videos")  # outside the repo: the clips' faces and voices
DEFAULT_RESULTS = REPO / "benchmarks" / "RESULTS.md"
DEFAULT_IMAGES_DIR = REPO / "docs" / "images"
BASELINES = ("static_face", "mean_face", "loudness_regressor")
ALL_MODELS = ("streaming", "streaming_smoothed", "offline") + BASELINES
OFFLINE_TOLERANCE = 1.10  # streaming mouth_ld may be at most 10 % above the offline model's
STATIC_RATIO_TARGET = 0.8  # streaming mouth_ld <= 0.8 x static_face
LIP_CORR_TARGET = 0.5
# Not a model: the truth itself through a centred moving average of this many frames (167 ms at 30 fps).
# Its distance to the truth is the frame-to-frame tracking jitter (and the fastest motion) that such
# smoothing removes, a part of every error that no model of the audio can predict. Reported beside the
# models, never among them, and never in a target check.
ORACLE = "oracle_smoothed_truth"
ORACLE_SMOOTH_FRAMES = 5
# Not a model either: the clip's still face with its mouth moved by the TRUE inner-lip gap alone, through a
# per-segment least-squares line from that gap to every mouth coordinate. It is what a model that knew the lip
# opening exactly (and how this speaker's mouth follows it) would score: the ceiling of any lip-gap predictor.
ORACLE_GAP = "oracle_true_lip_gap"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="pack split to score")
    p.add_argument("--pack", default=None, help="pack folder (default: ../shared/data/talking-faces)")
    p.add_argument("--model", default=None, help="streaming ONNX model (default: engine/assets/kfusion_stream.onnx)")
    p.add_argument("--offline-ckpt", default=str(DEFAULT_OFFLINE_CKPT), help="bidirectional checkpoint")
    p.add_argument("--lookahead-models", nargs="*", default=[], metavar="ONNX",
                   help="extra streaming ONNX models, scored as streaming_la<ms>ms (quality vs lookahead)")
    p.add_argument("--models", default=",".join(ALL_MODELS),
                   help=f"comma-separated subset of {','.join(ALL_MODELS)}")
    p.add_argument("--limit", type=int, default=None, help="score only the first N clips (quick checks)")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--results", default=str(DEFAULT_RESULTS),
                   help="markdown file whose eval section is replaced (full test-split runs only)")
    p.add_argument("--images", default=str(DEFAULT_IMAGES_DIR), help="folder for eval_*.png")
    p.add_argument("--no-report", action="store_true", help="write no RESULTS.md section and no plots")
    p.add_argument("--videos", default=str(DEFAULT_VIDEOS_DIR), help="folder for side-by-side mp4 videos")
    p.add_argument("--n-videos", type=int, default=3, help="videos to render (one per source first; 0: none)")


# --- predictors: segment -> (T, 68, 2) canonical 256 px frame (head motion where the model makes it) ----
def streaming_predictor(path: str | None):
    """Run the ONNX model on the whole clip in one call from the zero state (causal: equals streaming), with
    the model's lip seal applied as the engine applies it."""
    from engine import features
    from engine.session import ModelSession
    from engine.timing import gather_windows, samples_needed

    session = ModelSession(path, providers="cpu")
    meta = session.meta
    fps = round(meta.fps)

    def predict(seg) -> np.ndarray:
        n = len(seg.canonical)
        need = samples_needed(n - 1, fps, meta.lookahead_ms)
        audio = np.zeros(max(need, len(seg.audio)), np.float32)
        audio[: len(seg.audio)] = seg.audio  # zeros past the end cover the last frames' lookahead
        hops = features.extract(audio)  # (K, F)
        win = gather_windows(hops, features.SILENCE, n, fps, meta.lookahead_ms, meta.window_hops)
        ident = np.asarray(seg.identity, np.float32)[None]
        lm, _ = session.run(win[None].astype(np.float32), ident, session.initial_state(1))
        return lm[0]

    return predict, session.meta


def smoothed(predict, fps: int):
    """The predictor's frames through the engine's causal One Euro filter (EngineConfig defaults)."""
    from engine.config import EngineConfig
    from engine.smoothing import OneEuroFilter

    cfg = EngineConfig()

    def run(seg) -> np.ndarray:
        track = np.asarray(predict(seg), np.float32)
        f = OneEuroFilter(fps, cfg.one_euro_min_cutoff_hz, cfg.one_euro_beta)
        return f.filter_track(track.reshape(len(track), -1)).reshape(track.shape)

    return run


def offline_predictor(path: str):
    import torch

    from export.predict import load_checkpoint, predict_segment

    torch.set_num_threads(1)
    model, dims, meta = load_checkpoint(path)

    def predict(seg) -> np.ndarray:
        return predict_segment(model, seg.audio, seg.identity, n=len(seg.canonical))

    return predict, dims, meta


def build_predictors(args, fps: int) -> tuple[dict, dict]:
    """name -> predictor(segment); plus info (versions, skipped models with reasons)."""
    from export.baselines import LoudnessRegressor, still_face
    from export.data.pack import PACK_DIR, load_segments, reference_shape

    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(ALL_MODELS))
    if unknown:
        raise ValueError(f"--models: unknown {unknown}; expected a subset of {list(ALL_MODELS)}")
    preds: dict = {}
    info: dict = {"skipped": {}, "fps": fps}
    mean_face, lookahead_ms = None, 0.0
    if any(m in wanted for m in ("streaming", "streaming_smoothed", "mean_face", "loudness_regressor")):
        try:
            predict, meta = streaming_predictor(args.model)
        except FileNotFoundError as exc:
            if "streaming" in wanted:
                raise
            log.warning("no streaming model (%s): mean_face falls back to the pack's reference shape", exc)
        else:
            if round(meta.fps) != fps:
                raise ValueError(f"streaming model runs at {meta.fps} fps, the evaluation at {fps}")
            mean_face, lookahead_ms = meta.mean_face, meta.lookahead_ms
            info["streaming"] = {"model_version": meta.model_version, "config_hash": meta.config_hash,
                                 "lookahead_ms": meta.lookahead_ms, "window_hops": meta.window_hops,
                                 "lip_seal_pct": meta.lip_seal_pct,
                                 "path": str(args.model or "engine/assets/kfusion_stream.onnx")}
            if "streaming" in wanted:
                preds["streaming"] = predict
            if "streaming_smoothed" in wanted:  # what `--smoothing` streams: the engine's One Euro defaults
                preds["streaming_smoothed"] = smoothed(predict, fps)
    for path in args.lookahead_models:
        predict, meta = streaming_predictor(path)
        name = f"streaming_la{meta.lookahead_ms:g}ms"
        preds[name] = predict
        info[name] = {"model_version": meta.model_version, "path": str(path), "lookahead_ms": meta.lookahead_ms}
    if "offline" in wanted:
        if not Path(args.offline_ckpt).is_file():
            msg = f"offline checkpoint not found at {args.offline_ckpt} (--offline-ckpt): offline model skipped"
            print(msg)
            info["skipped"]["offline"] = msg
        else:
            predict, dims, meta = offline_predictor(args.offline_ckpt)
            if dims.fps != fps:
                raise ValueError(f"offline checkpoint runs at {dims.fps} fps, the evaluation at {fps}")
            preds["offline"] = predict
            info["offline"] = {"model_version": meta.get("model_version"), "config_hash": meta.get("config_hash"),
                               "path": str(args.offline_ckpt), "bidirectional": dims.bidirectional}
            if not dims.bidirectional:
                print(f"note: {args.offline_ckpt} is a causal (streaming) checkpoint, not the bidirectional one")
    if "static_face" in wanted:  # the clip's own mean canonical shape, never a frame of the target
        preds["static_face"] = lambda seg: still_face(seg.identity, len(seg.canonical))
    if "mean_face" in wanted:
        face = mean_face if mean_face is not None else reference_shape()
        info["mean_face_from"] = "model metadata" if mean_face is not None else "pack reference_shape()"
        preds["mean_face"] = lambda seg: still_face(face, len(seg.canonical))
    if "loudness_regressor" in wanted:
        train = load_segments(args.pack or PACK_DIR, "train", fps)
        reg = LoudnessRegressor.fit(train, fps, lookahead_ms)
        info["loudness_regressor"] = {"fit_split": reg.fit_split, "train_clips": len(reg.fitted_on),
                                      "lookahead_ms": lookahead_ms}
        preds["loudness_regressor"] = lambda seg: reg.predict(seg.audio, seg.identity, len(seg.canonical))
    return preds, info


# --- scoring ------------------------------------------------------------------------------------------
def truth_track(seg) -> np.ndarray:
    """The ground truth in the model's output frame: canonical shapes with the head motion applied."""
    from engine.face import apply_head_motion

    return apply_head_motion(seg.canonical.astype(np.float64), seg.head.astype(np.float64))


def smoothed_truth(track: np.ndarray, frames: int = ORACLE_SMOOTH_FRAMES) -> np.ndarray:
    """Centred moving average of a (T, 68, 2) track over `frames` frames (odd), edges repeated."""
    from export.data.smooth import centred_mean

    return centred_mean(track, frames)


def true_lip_gap_face(track: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(T, 68, 2) canonical track -> its mean shape, with the mouth (48-67) a least-squares linear function of
    the track's own inner-lip gap. Only the gap is taken from the truth; widening, rounding, smiles and any
    mouth change the gap does not explain stay at the mean."""
    from engine.face import MOUTH, inner_lip_gap
    from export.metrics import canonicalise

    t = canonicalise(track, reference)
    mean = t.mean(axis=0)
    gap = inner_lip_gap(t) - inner_lip_gap(mean)  # (T,)
    mouth = (t[:, MOUTH] - mean[MOUTH]).reshape(len(t), -1)  # (T, 40) mouth coordinates about the mean
    coef = np.linalg.lstsq(gap[:, None], mouth, rcond=None)[0]  # (1, 40) px per px of gap
    out = np.repeat(mean[None], len(t), axis=0)
    out[:, MOUTH] += (gap[:, None] @ coef).reshape(len(t), len(MOUTH), 2)
    return out


def merge_segments(parts: list[dict]) -> dict:
    """One clip's metrics from its segments: frame-weighted means (curves too)."""
    if len(parts) == 1:
        return parts[0]
    w = np.array([p["frames"] for p in parts], np.float64)
    out = {"frames": int(w.sum())}
    for k in ("ld", "mouth_ld", "lvd", "mouth_lvd"):
        out[k] = float(np.average([p[k] for p in parts], weights=w))
    for k in ("closures", "closures_shut"):  # counts add up
        if all(k in p for p in parts):
            out[k] = int(sum(p[k] for p in parts))
    curves = np.array([p["lip_gap_curve"] for p in parts], np.float64)
    ok = np.isfinite(curves)
    cw = np.where(ok, w[:, None], 0.0)
    total = cw.sum(axis=0)
    mean = (np.where(ok, curves, 0.0) * cw).sum(axis=0) / np.maximum(total, 1e-12)
    out["lip_gap_curve"] = np.where(total > 0, mean, np.nan).tolist()
    return out


def score(segments: list, preds: dict, fps: int, reference: np.ndarray) -> tuple[dict, dict]:
    """-> (per_clip {clip_id: {model: metrics}}, traces {clip_id: {"truth": gap, model: gap}})."""
    from tqdm import tqdm

    from engine.face import inner_lip_gap
    from export.articulation import inner_gap_pct, shut_at, speech_closures
    from export.metrics import canonicalise, clip_metrics

    by_clip: dict = defaultdict(lambda: defaultdict(list))
    traces: dict = {}
    for seg in tqdm(segments, desc="eval", unit="clip"):
        truth = truth_track(seg)
        truth_canon = canonicalise(truth, reference)
        gaps = {"truth": inner_lip_gap(truth_canon)}
        spans = speech_closures(inner_gap_pct(truth_canon))  # where the tracked lips shut inside speech
        for name, predict in preds.items():
            pred = np.asarray(predict(seg), np.float64)
            if pred.shape != truth.shape:
                raise ValueError(f"{name} gave {pred.shape} for {seg.clip_id}, expected {truth.shape}")
            metrics = clip_metrics(pred, truth, fps, reference)
            pred_canon = canonicalise(pred, reference)
            metrics.update(closures=len(spans), closures_shut=shut_at(inner_gap_pct(pred_canon), spans))
            by_clip[seg.clip_id][name].append(metrics)
            gaps[name] = inner_lip_gap(pred_canon)
        if len(gaps["truth"]) > len(traces.get(seg.clip_id, {}).get("truth", ())):
            traces[seg.clip_id] = gaps  # the clip's longest segment
    per_clip = {cid: {m: merge_segments(parts) for m, parts in models.items()} for cid, models in by_clip.items()}
    return per_clip, traces


def summarise(per_clip: dict, sources: dict, fps: int) -> dict:
    from export.metrics import aggregate

    def agg(ids):
        models = sorted({m for c in ids for m in per_clip[c]}, key=_model_order)
        return {m: aggregate([per_clip[c][m] for c in ids if m in per_clip[c]], fps) for m in models}

    ids = sorted(per_clip)
    by_source = {src: agg([c for c in ids if sources[c] == src]) for src in sorted(set(sources.values()))}
    return {"models": agg(ids), "by_source": by_source}


def paired(per_clip: dict, model: str = "streaming") -> dict:
    """{rival: {metric: paired_ratio}} of `model` against every other model, on mouth_ld and mouth_lvd."""
    from export.metrics import paired_ratio

    ids = sorted(c for c in per_clip if model in per_clip[c])
    rivals = sorted({m for c in ids for m in per_clip[c]} - {model}, key=_model_order)
    out = {}
    for rival in rivals:
        both = [c for c in ids if rival in per_clip[c]]
        if both:
            out[rival] = {k: paired_ratio([per_clip[c][model][k] for c in both],
                                          [per_clip[c][rival][k] for c in both]) for k in ("mouth_ld", "mouth_lvd")}
    return out


def _model_order(name: str) -> tuple[int, str]:
    return (ALL_MODELS.index(name) if name in ALL_MODELS else 1, name)


def target_checks(models: dict, fps: int) -> list[dict]:
    """The issue's quality targets, each with pass/fail (None where a model needed was not run)."""
    checks = []
    s = models.get("streaming")

    def add(name, ok, detail):
        checks.append({"check": name, "pass": ok, "detail": detail})

    if s is None:
        add("streaming was evaluated", False, "no streaming model")
        return checks
    for metric in ("mouth_ld", "mouth_lvd"):
        rivals = {b: models[b][metric] for b in BASELINES if b in models}
        ok = all(s[metric] < v for v in rivals.values()) if rivals else None
        add(f"streaming beats every baseline on {metric}", ok,
            f"streaming {s[metric]:.4f} vs " + (", ".join(f"{b} {v:.4f}" for b, v in rivals.items()) or "no baseline run"))
    if "static_face" in models:
        ratio = s["mouth_ld"] / models["static_face"]["mouth_ld"]
        add(f"streaming mouth_ld <= {STATIC_RATIO_TARGET} x static_face", ratio <= STATIC_RATIO_TARGET,
            f"ratio {ratio:.3f}")
    frame_ms = 1000.0 / fps
    r, lag = s["lip_gap_corr"], s["lip_gap_lag_ms"]
    ok = bool(np.isfinite(r) and r >= LIP_CORR_TARGET and abs(lag) <= frame_ms + 1e-6)
    add(f"lip_gap_corr >= {LIP_CORR_TARGET} with |lag| <= one frame ({frame_ms:.1f} ms)", ok,
        f"r(lag 0) {r:.3f}, peak at {lag:+.1f} ms")
    if "offline" in models:
        ratio = s["mouth_ld"] / models["offline"]["mouth_ld"]
        add("streaming mouth_ld within 10% of offline (<= 1.10 x)", ratio <= OFFLINE_TOLERANCE,
            f"ratio {ratio:.3f}")
    else:
        add("streaming mouth_ld within 10% of offline (<= 1.10 x)", None, "offline model not evaluated")
    return checks


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy -> python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _num(v, fmt: str, scale: float = 1.0, missing: str = "n/a") -> str:
    return format(scale * v, fmt) if v is not None and np.isfinite(v) else missing


def format_table(models: dict) -> str:
    """Markdown table: one row per model, the six metrics (LD/LVD in % of the inter-ocular distance), and the
    share of the tracked mid-speech lip closures where the model shuts too (export.articulation.speech_closures)."""
    rows = [("| model | LD % | mouth LD % | LVD % | mouth LVD % | lip-gap r (lag 0) | lip-gap lag ms | "
             "tracked closures shut |"),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in models.items():
        cells = [_num(m[k], ".2f", 100.0) for k in ("ld", "mouth_ld", "lvd", "mouth_lvd")]
        cells += [_num(m["lip_gap_corr"], ".3f", missing="n/a (still)"), _num(m["lip_gap_lag_ms"], "+.0f")]
        shut = _num(m.get("closures_shut_fraction"), ".2f")
        cells.append(f"{shut} of {m['closures']}" if "closures" in m else shut)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run(args) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from export.data.pack import PACK_DIR, clip_segments, load_manifest, load_segments, reference_shape
    from export.eval_report import render_videos, write_plots, write_results_section

    fps = 30
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.n_videos < 0:
        raise ValueError(f"--n-videos must be >= 0, got {args.n_videos}")
    preds, info = build_predictors(args, fps)
    if not preds:
        raise ValueError("no model to evaluate (check --models)")
    reference = reference_shape().astype(np.float64)
    if args.limit is None:
        segments = load_segments(args.pack or PACK_DIR, args.split, fps)
    else:  # the first N clips by id, loaded alone
        records = sorted((r for r in load_manifest(args.pack or PACK_DIR) if r["split"] == args.split),
                         key=lambda r: r["id"])[: args.limit]
        segments = [s for r in records for s in clip_segments(r, reference, fps)]
    per_clip, traces = score(segments, preds, fps, reference)
    sources = {s.clip_id: s.source for s in segments}
    listed = sorted(r["id"] for r in load_manifest(args.pack or PACK_DIR) if r["split"] == args.split)
    dropped = [c for c in listed[: args.limit or len(listed)] if c not in sources]
    summary = summarise(per_clip, sources, fps)
    checks = target_checks(summary["models"], fps)
    summary["paired"] = paired(per_clip) if "streaming" in preds else {}
    oracles = {ORACLE: lambda seg: smoothed_truth(truth_track(seg)),
               ORACLE_GAP: lambda seg: true_lip_gap_face(truth_track(seg), reference)}
    oracle_clips, _ = score(segments, oracles, fps, reference)
    summary["reference"] = summarise(oracle_clips, sources, fps)
    summary["reference"]["note"] = (
        f"two oracles that see the answer. `{ORACLE}` is the truth through a centred {ORACLE_SMOOTH_FRAMES}-frame "
        f"({1000 * ORACLE_SMOOTH_FRAMES / fps:.0f} ms) moving average: its distance to the truth is what that average "
        f"removes, mostly the tracker's frame-to-frame jitter, which no model of the audio can predict. `{ORACLE_GAP}` "
        "is the clip's still face with the mouth moved by the true inner-lip gap alone (a per-segment least-squares "
        "line from the gap to each mouth coordinate): about the best a model that gets only the lip opening right can do")
    result = {
        "split": args.split, "fps": fps, "n_clips": len(per_clip), "n_segments": len(segments),
        "frames": int(sum(len(s.canonical) for s in segments)),
        "dropped_clips": dropped,  # clips with no face-tracked stretch of >= 1 s (export.data.pack)
        "aggregation": "per clip: mean over frames (segments of a clip frame-weighted); then mean over clips",
        "truth": "canonical + head motion (the model's output frame); head pose then removed from both "
                 "tracks by engine.face.to_canonical onto the pack's reference shape",
        **summary, "targets": checks, "info": info,
        "clips": {c: {"source": sources[c], **{m: {k: v for k, v in r.items() if k != "lip_gap_curve"}
                                              for m, r in models.items()}} for c, models in per_clip.items()},
    }
    print(f"\n{args.split} split: {result['n_clips']} clips, {result['frames']} frames at {fps} fps "
          f"(mean over clips; no usable segment: {dropped or 'none'})\n" + format_table(summary["models"]))
    print(f"reference, not a model ({summary['reference']['note']}):\n"
          + format_table(summary["reference"]["models"]))
    for src, models in summary["by_source"].items():
        print(f"\n{src} ({sum(1 for c in sources.values() if c == src)} clips)\n" + format_table(models))
    for rival, cmp in summary["paired"].items():
        print(f"streaming / {rival}: " + "; ".join(
            f"{k} ratio {v['ratio']:.3f} (95% CI {v['ci95'][0]:.3f}-{v['ci95'][1]:.3f}), better on "
            f"{100 * v['clips_better']:.0f}% of clips" for k, v in cmp.items()))
    print("\nTarget checks:")
    for c in checks:
        mark = "n/a " if c["pass"] is None else ("PASS" if c["pass"] else "FAIL")
        print(f"  [{mark}] {c['check']}: {c['detail']}")
    for name, why in info["skipped"].items():
        print(f"  (skipped {name}: {why})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_clean(result), indent=1, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    full_run = args.limit is None
    if not args.no_report and full_run:
        images = write_plots(result, traces, per_clip, Path(args.images))
        if args.split == "test":
            write_results_section(Path(args.results), result, images, format_table)
            print(f"updated {args.results}")
    elif not args.no_report:
        print("--limit given: RESULTS.md and plots left untouched (partial run)")
    if args.n_videos:
        render_videos(segments, preds, Path(args.videos), args.n_videos, reference)
    return 0
