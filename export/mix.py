"""Weight-space mix of two fine-tunes of one model: theta = (1 - alpha) * theta_A + alpha * theta_B (WiSE-FT style).

Usage: kfusion mix A B --alpha 0.5 --out mixed.pt     (A, B: checkpoints .pt or streaming exports .onnx)

Each KAN layer's spline weight is mixed as the product spline_weight * spline_scaler (the function's own
parameter; an export keeps only that product), so the result carries spline_scaler = 1. Everything else is
mixed element by element. Both models must share dims, normalisers and knots: fine-tunes of one model do.
"""

from __future__ import annotations

import argparse
import logging

from export.model import KAN_LAYERS, NORMALISER_BUFFERS

log = logging.getLogger("kfusion.mix")
# what fine-tuning never changes: must be equal in both models, and is kept, not mixed
SHARED_BUFFERS = NORMALISER_BUFFERS + tuple(f"{kan}.knots" for kan in KAN_LAYERS)


def folded_state(model) -> dict:
    """state_dict with each KAN layer's spline_scaler folded into its spline_weight (scaler = 1)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for kan in KAN_LAYERS:
        sd[f"{kan}.spline_weight"] = sd[f"{kan}.spline_weight"] * sd[f"{kan}.spline_scaler"].unsqueeze(-1)
        sd[f"{kan}.spline_scaler"] = sd[f"{kan}.spline_scaler"].new_ones(sd[f"{kan}.spline_scaler"].shape)
    return sd


def mix_models(path_a: str, path_b: str, alpha: float):
    """-> (KFusion with the mixed weights, meta of A, meta of B)."""
    import torch

    from export.predict import load_checkpoint

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    model, dims_a, meta_a = load_checkpoint(path_a)
    other, dims_b, meta_b = load_checkpoint(path_b)
    if dims_a != dims_b:
        raise ValueError(f"{path_a} and {path_b} must share dims, got {dims_a} and {dims_b}")
    sa, sb = folded_state(model), folded_state(other)
    for key in SHARED_BUFFERS:
        if not torch.equal(sa[key], sb[key]):
            raise ValueError(f"{path_a} and {path_b} differ in {key}: mix only fine-tunes of one model")
    model.load_state_dict({k: v if k in SHARED_BUFFERS else torch.lerp(v, sb[k], alpha) for k, v in sa.items()})
    return model.eval(), meta_a, meta_b


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="first model (.pt checkpoint or streaming .onnx): alpha 0 gives it back")
    p.add_argument("b", help="second model, a fine-tune of the same model: alpha 1 gives it back")
    p.add_argument("--alpha", type=float, required=True, help="weight of B, in [0, 1]")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt); `kfusion export` turns it into ONNX")


def run(args: argparse.Namespace) -> int:
    from export.model import config_hash
    from export.predict import save_checkpoint

    model, meta_a, meta_b = mix_models(args.a, args.b, args.alpha)
    config = {"mix": {"a": meta_a.get("model_version"), "b": meta_b.get("model_version"), "alpha": args.alpha}}
    version = f"stream-{config_hash(config)[:8]}-mix{round(100 * args.alpha)}"
    save_checkpoint(args.out, model, config, meta_a["mean_face"], version)
    log.info("wrote %s: %s = (1 - %g) x %s + %g x %s", args.out, version, args.alpha, args.a, args.alpha, args.b)
    print(f"wrote {args.out}: version {version}")
    return 0
