"""Export a streaming KFusion checkpoint to ONNX with its metadata contract (engine/session.py).

Usage: kfusion export CKPT --out model.onnx [--opset 17]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from engine.config import HOP_SAMPLES, LANDMARK_LAYOUT, N_LANDMARKS, SAMPLE_RATE_HZ, lip_seal_pct_value
from engine.session import CONTRACT_VERSION, INPUT_NAMES, OUTPUT_NAMES

log = logging.getLogger("kfusion.export")
MIN_OPSET = 17
COORDINATE_FRAME = "canonical256"
EXAMPLE_T = 5  # frames in the tracing example; the axis is exported as dynamic and checked after


def contract_props(dims, meta: dict, lip_seal_pct: float = 0.0) -> dict[str, str]:
    """metadata_props exactly as engine.session.ModelMeta.from_props reads them."""
    mean_face = np.asarray(meta["mean_face"], np.float32)
    if mean_face.shape != (N_LANDMARKS, 2):
        raise ValueError(f"checkpoint mean_face must be ({N_LANDMARKS}, 2), got {mean_face.shape}")
    return {
        "kfusion_contract": CONTRACT_VERSION,
        "model_version": str(meta["model_version"]),
        "config_hash": str(meta["config_hash"]),
        "sample_rate_hz": str(SAMPLE_RATE_HZ),
        "hop_samples": str(HOP_SAMPLES),
        "n_features": str(dims.n_features),
        "feature_version": dims.feature_version,
        "fps": str(dims.fps),
        "lookahead_ms": str(dims.lookahead_ms),
        "window_hops": str(dims.window_hops),
        "state_size": str(dims.state_size),
        "emotions": json.dumps(list(meta["emotions"])),
        "landmark_layout": LANDMARK_LAYOUT,
        "coordinate_frame": COORDINATE_FRAME,
        "mean_face": json.dumps(np.round(mean_face.astype(np.float64), 4).tolist()),
        "lip_seal_pct": f"{float(lip_seal_pct):g}",  # the engine's output lip seal for this model (0 = none)
    }


def export_onnx(ckpt_path: str | Path, out_path: str | Path, opset: int = MIN_OPSET,
                lip_seal_pct: float = 0.0) -> dict[str, str]:
    """Trace the checkpoint's model with dynamic B and T, attach metadata, check, verify axes in ORT.

    lip_seal_pct is stored for the engine (engine.face.seal_lips); the graph itself is the network alone."""
    import onnx
    import torch

    from export.predict import load_checkpoint

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    lip_seal_pct_value(lip_seal_pct)
    model, dims, meta = load_checkpoint(ckpt_path)
    if dims.bidirectional:
        raise ValueError(f"{ckpt_path}: the offline (bidirectional) model cannot stream; use export.predict")
    b, t = 2, EXAMPLE_T
    example = (
        torch.randn(b, t, dims.window_hops, dims.n_features),
        torch.from_numpy(np.asarray(meta["mean_face"], np.float32)).expand(b, -1, -1).contiguous(),
        torch.zeros(b, dims.n_emotions),
        torch.zeros(b, dims.state_size),
    )
    axes = {"feats": {0: "B", 1: "T"}, "identity": {0: "B"}, "emotion": {0: "B"}, "state": {0: "B"},
            "landmarks": {0: "B", 1: "T"}, "state_out": {0: "B"}}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(model, example, str(tmp), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_axes=axes, opset_version=opset,
                          dynamo=False)
    proto = onnx.load(str(tmp))
    props = contract_props(dims, meta, lip_seal_pct)
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(tmp))
    verify_dynamic(tmp, model, dims, np.asarray(meta["mean_face"], np.float32))
    tmp.replace(out_path)
    log.info("wrote %s (%.2f MB, state %d, opset %d)", out_path, out_path.stat().st_size / 1e6,
             dims.state_size, opset)
    return props


def verify_dynamic(path: Path, model, dims, mean_face: np.ndarray, tol: float = 1e-4) -> float:
    """Run ORT at several (B, T) and compare with torch; raise if an axis is fixed or outputs differ."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for b, t in ((1, 1), (3, 7), (2, 23)):
        feats = rng.normal(size=(b, t, dims.window_hops, dims.n_features)).astype(np.float32)
        ident = np.repeat(mean_face[None], b, 0)
        emo = np.zeros((b, dims.n_emotions), np.float32)
        state = (0.1 * rng.normal(size=(b, dims.state_size))).astype(np.float32)
        lm, st = sess.run(list(OUTPUT_NAMES), {"feats": feats, "identity": ident, "emotion": emo,
                                               "state": state})
        with torch.no_grad():
            tlm, tst = model(*(torch.from_numpy(a) for a in (feats, ident, emo, state)))
        if lm.shape != (b, t, N_LANDMARKS, 2) or st.shape != (b, dims.state_size):
            raise ValueError(f"exported model gave shapes {lm.shape}, {st.shape} for B={b}, T={t}")
        worst = max(worst, float(np.abs(lm - tlm.numpy()).max()), float(np.abs(st - tst.numpy()).max()))
    if worst > tol:
        raise ValueError(f"ONNX Runtime differs from torch by {worst:.2e} (> {tol})")
    log.info("ORT matches torch at B,T in (1,1), (3,7), (2,23): max |diff| %.2e", worst)
    return worst


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (.pt) of a streaming model")
    parser.add_argument("--out", required=True, help="output .onnx path")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--lip-seal-pct", type=float, default=0.0,
                        help="lip seal the engine applies to this model's output, %% of the eye distance "
                             "(engine.face.seal_lips; the shipped model uses 1.0, chosen on the val splits)")


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    props = export_onnx(args.checkpoint, args.out, args.opset, args.lip_seal_pct)
    print(f"wrote {args.out}: version {props['model_version']}, state_size {props['state_size']}, "
          f"lookahead {props['lookahead_ms']} ms, window {props['window_hops']} hops")
    return 0
