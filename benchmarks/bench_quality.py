"""Quality against lookahead: mouth LD and lip-gap lag on the pack's test split for models trained with
different lookaheads, plotted against the latency each lookahead costs; the still face is the peer.

Usage: kfusion bench quality --models la0.onnx la40.onnx ... [--json PATH] [--plot docs/images/quality_lookahead.png]
Without --models it takes every la*.onnx in the lookahead sweep's folder (LOOKAHEAD_DIR, with the recipe that
made them in its RECIPE.txt), else the shipped model alone.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from engine.cache import cache_dir

CHUNK_MS = 20.0  # audio chunk a live client sends; a frame waits for the chunk that completes it
PROCESSING_MS = 2.0  # server-side p50 for one stream (kfusion bench latency), added to every point
DEFAULT_PLOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "quality_lookahead.png"
LOOKAHEAD_DIR = cache_dir("la2")  # la<ms>.onnx per lookahead, and RECIPE.txt (the model card's sweep)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=None, metavar="ONNX",
                   help="streaming ONNX models of one recipe trained with different lookaheads "
                        f"(default: {LOOKAHEAD_DIR}/la*.onnx when there, else the shipped model alone)")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--plot", default=str(DEFAULT_PLOT), help="where to write the plot")
    p.add_argument("--json", default=None, help="write the results as JSON here")


def default_models(folder: Path = LOOKAHEAD_DIR) -> tuple[list[str], str | None]:
    """(the sweep's models in lookahead order, its recipe text) when the folder holds any, else ([], None)."""
    import re

    found = sorted(folder.glob("la*.onnx"), key=lambda p: float(re.sub(r"[^0-9.]", "", p.stem) or "inf"))
    recipe = folder / "RECIPE.txt"
    return [str(p) for p in found], (recipe.read_text().strip() if found and recipe.is_file() else None)


def _per_clip(per_clip: dict, name: str) -> dict:
    """median / p99 / max over clips of one model's mouth LD."""
    from benchmarks.bench_features import _stats

    return _stats([c[name]["mouth_ld"] for c in per_clip.values()])


def run(args) -> int:
    import os

    import numpy as np

    from benchmarks.machine import run_date_utc
    from engine.session import default_model_path
    from export.baselines import still_face
    from export.data.pack import PACK_DIR, load_segments, reference_shape
    from export.evaluate import score, streaming_predictor, summarise

    fps = 30
    recipe = None
    if not args.models:
        args.models, recipe = default_models()
        args.models = args.models or [str(default_model_path())]
    preds, lookahead = {}, {}
    for path in args.models:
        predict, meta = streaming_predictor(path)
        name = f"la{meta.lookahead_ms:g}ms"
        if name in preds:
            raise ValueError(f"two models with lookahead {meta.lookahead_ms} ms: give one per lookahead")
        preds[name], lookahead[name] = predict, meta.lookahead_ms
    preds["static_face"] = lambda seg: still_face(seg.identity, len(seg.canonical))
    segments = load_segments(PACK_DIR, args.split, fps)
    per_clip, _ = score(segments, preds, fps, reference_shape().astype(np.float64))
    models = summarise(per_clip, {s.clip_id: s.source for s in segments}, fps)["models"]
    peer = models["static_face"]["mouth_ld"]
    points = []
    for name in sorted(lookahead, key=lookahead.get):
        m = models[name]
        points.append({"model": Path(args.models[list(lookahead).index(name)]).name,
                       "lookahead_ms": lookahead[name], "latency_ms": lookahead[name] + CHUNK_MS + PROCESSING_MS,
                       "mouth_ld": m["mouth_ld"], "mouth_ld_vs_static": m["mouth_ld"] / peer,
                       "mouth_ld_per_clip": _per_clip(per_clip, name),
                       "lip_gap_corr": m["lip_gap_corr"], "lip_gap_lag_ms": m["lip_gap_lag_ms"]})
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    settings = {"split": args.split, "clips": len(per_clip), "fps": fps, "chunk_ms": CHUNK_MS,
                "processing_ms": PROCESSING_MS, "models": [Path(m).name for m in args.models]}
    print(f"machine: {machine}; split {args.split}, {len(per_clip)} clips, "
          f"latency = lookahead + {CHUNK_MS:g} ms chunk + {PROCESSING_MS:g} ms processing")
    print(f"peer static_face mouth LD {100 * peer:.2f} %")
    print("lookahead ms | latency ms | mouth LD % | vs static | per clip median / p99 / max % | lip-gap r | lag ms")
    for p in points:
        c = p["mouth_ld_per_clip"]
        print(f"{p['lookahead_ms']:12g} | {p['latency_ms']:10g} | {100 * p['mouth_ld']:10.2f} | "
              f"{p['mouth_ld_vs_static']:9.3f} | {100 * c['median']:.2f} / {100 * c['p99']:.2f} / {100 * c['max']:.2f} | "
              f"{p['lip_gap_corr']:9.3f} | {p['lip_gap_lag_ms']:6.0f}")
    _plot(points, peer, Path(args.plot))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        out = {"machine": machine, "settings": settings, "date_utc": run_date_utc(),
               "split": args.split, "clips": len(per_clip), "static_face_mouth_ld": peer,
               "static_face_mouth_ld_per_clip": _per_clip(per_clip, "static_face"), "points": points}
        if recipe:
            out["recipe"] = recipe
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _plot(points: list[dict], peer: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = [p["latency_ms"] for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(lat, [100 * p["mouth_ld"] for p in points], "o-", label="streaming model")
    a.axhline(100 * peer, color="grey", ls="--", label="still face (peer)")
    for p in points:
        a.annotate(f"{p['lookahead_ms']:g} ms", (p["latency_ms"], 100 * p["mouth_ld"]), fontsize=8,
                   xytext=(3, 3), textcoords="offset points")
    a.set_xlabel("audio-to-frame latency (ms)")
    a.set_ylabel("mouth LD (% inter-ocular)")
    a.legend(fontsize=8)
    b.plot(lat, [p["lip_gap_corr"] for p in points], "o-", color="C1", label="lip-gap r (lag 0)")
    b.set_xlabel("audio-to-frame latency (ms)")
    b.set_ylabel("lip-gap correlation")
    b2 = b.twinx()
    b2.plot(lat, [p["lip_gap_lag_ms"] for p in points], "s--", color="C2", label="lag (ms)")
    b2.set_ylabel("lip-gap lag (ms, + = late)")
    fig.suptitle("Quality against lookahead (pack test split)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
