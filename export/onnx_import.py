"""Rebuild a streaming KFusion's torch weights from its exported ONNX file, to fine-tune the shipped model.

Usage: kfusion train --init-from engine/assets/kfusion_stream.onnx ...   (or, in code:
    dims, state_dict, meta = state_dict_from_onnx("engine/assets/kfusion_stream.onnx"))

torch.onnx.export keeps some weights under their torch names and folds the rest into `onnx::...` initializers.
Each of those is named here by the graph node that reads it, and the export's rewrites are undone: the
conv-as-matmul kernels of KFusion._mel_encode, the transposed Linear weights, the GRU gate order, and the
cubic KAN weight spline_weight * spline_scaler / 6 (basis-major), which comes back as spline_scaler = 1 and
spline_weight = 6 x the product: the same function, a different parameterisation. The result is checked
against ONNX Runtime on the file itself before it is returned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.model import KAN_LAYERS, KFusion, ModelDims

CUBIC = 3  # the graph holds the basis-major cubic KAN path only (export/kan.py)
LINEAR_WEIGHTS = {"ctx_proj": "weight", "emo_embed": "weight", "kan1": "base_weight", "kan2": "base_weight"}
GRUS = ("global_gru", "ctx_gru")


def _scope(node) -> str:
    """'/kan1/MatMul_1' -> 'kan1'; '/Flatten' or 'Identity_147' -> '' (KFusion's own ops)."""
    parts = node.name.strip("/").split("/")
    return parts[0] if len(parts) > 1 else ""


def _readers(proto) -> dict[str, list[tuple[int, object, int]]]:
    """tensor -> [(node index, node, input index)] of the nodes that read it, looking through Identity."""
    direct: dict[str, list] = {}
    for k, node in enumerate(proto.graph.node):
        for i, name in enumerate(node.input):
            direct.setdefault(name, []).append((k, node, i))

    def resolve(name: str) -> list:
        out = []
        for k, node, i in direct.get(name, []):
            out += resolve(node.output[0]) if node.op_type == "Identity" else [(k, node, i)]
        return out

    return {name: resolve(name) for name in direct}


def _gru_weights(node, inits: dict, prefix: str) -> dict[str, np.ndarray]:
    """ONNX GRU W (1,3H,I), R (1,3H,H), B (1,6H), gates (z, r, h) -> torch's *_ih/_hh, gates (r, z, n)."""
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("linear_before_reset") != 1 or attrs.get("direction", b"forward") != b"forward":
        raise ValueError(f"{node.name}: expected a forward GRU with linear_before_reset=1, got {attrs}")
    if not all(name in inits for name in node.input[1:4]):
        raise ValueError(f"{node.name}: expected W, R and B initializers, found inputs {list(node.input)}")
    h = attrs["hidden_size"]

    def r_z_n(m: np.ndarray) -> np.ndarray:
        return np.concatenate([m[h:2 * h], m[:h], m[2 * h:]])

    w, r, b = (inits[name][0] for name in node.input[1:4])
    return {f"{prefix}.weight_ih": r_z_n(w), f"{prefix}.weight_hh": r_z_n(r),
            f"{prefix}.bias_ih": r_z_n(b[:3 * h]), f"{prefix}.bias_hh": r_z_n(b[3 * h:])}


def _map_weights(proto, inits: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], set[str]]:
    """-> (torch-named arrays, each KAN's knot centres in grid steps, the initializers left unexplained)."""
    sd = {name: a for name, a in inits.items() if not name.startswith("onnx::")}
    readers = _readers(proto)
    convs, centres, unused = [], {}, set()
    for module in GRUS:
        nodes = [n for n in proto.graph.node if n.op_type == "GRU" and _scope(n) == module]
        for layer, node in enumerate(nodes):  # graph order is topological: layer 0 first
            sd.update({f"{k}_l{layer}": v for k, v in _gru_weights(node, inits, module).items()})
    for name, a in inits.items():
        uses = sorted({(_scope(n), n.op_type, i) for _, n, i in readers.get(name, [])})
        if not name.startswith("onnx::") or (uses and all(op == "GRU" for _, op, _ in uses)):
            continue
        if uses and all(op == "Sub" and i == 1 and s in KAN_LAYERS for s, op, i in uses):  # knots[2:-2] / step
            centres.update({s: a.reshape(-1) for s, _, _ in uses})
            continue
        scope, op, i = uses[0] if len(uses) == 1 else ("", "", -1)
        if op == "MatMul" and i == 1 and scope in LINEAR_WEIGHTS:  # x @ W.T
            sd[f"{scope}.{LINEAR_WEIGHTS[scope]}"] = a.T
        elif op == "Flatten" and a.ndim == 3 and scope in KAN_LAYERS:  # (out, n_bases, in) = (w * scaler / 6).transpose(1, 2)
            sd[f"{scope}.spline_weight"] = 6.0 * a.transpose(0, 2, 1)
            sd[f"{scope}.spline_scaler"] = np.ones((a.shape[0], a.shape[2]), np.float32)
        elif op == "Flatten" and a.ndim == 3 and scope == "":  # conv.weight.permute(0, 2, 1): (C_out, 3, C_in)
            convs.append((readers[name][0][0], a.transpose(0, 2, 1)))
        elif op == "Slice" and scope == "" and list(a) == list(np.shape(inits.get("mel_proj.weight"))):
            pass  # mel_proj.weight's shape, for the unflatten in _mel_encode: nothing to store
        else:
            unused.add(f"{name} {list(a.shape)} (read by {uses or 'nothing'})")
    for k, (_, w) in enumerate(sorted(convs, key=lambda c: c[0])):  # mel_conv.0 comes first in the graph
        sd[f"mel_conv.{2 * k}.weight"] = w
    return sd, centres, unused


def _dims(sd: dict[str, np.ndarray], meta, source: str) -> ModelDims:
    """ModelDims from the metadata contract and the weight shapes; dropout (training only) at its default."""
    def size(key: str, axis: int) -> int:
        if key not in sd:
            raise ValueError(f"{source}: expected KFusion weight {key} in the graph, found none")
        return int(sd[key].shape[axis])

    def layers(module: str) -> int:
        return sum(k.startswith(f"{module}.weight_hh_l") for k in sd)

    if meta.fps != int(meta.fps):
        raise ValueError(f"{source}: expected a whole fps for KFusion, metadata has {meta.fps}")
    dims = ModelDims(
        n_features=meta.n_features, feature_version=meta.feature_version, fps=int(meta.fps),
        lookahead_ms=meta.lookahead_ms, window_hops=meta.window_hops,
        conv_channels=size("mel_conv.0.bias", 0), enc_dim=size("mel_proj.bias", 0),
        global_hidden=size("global_gru.weight_hh_l0", 1), global_layers=layers("global_gru"),
        ctx_in=size("ctx_proj.bias", 0), ctx_hidden=size("ctx_gru.weight_hh_l0", 1),
        ctx_layers=layers("ctx_gru"), emo_dim=size("emo_embed.weight", 0), n_emotions=meta.n_emotions,
        kan_hidden=size("kan_norm.weight", 0),
        grid_size=size("kan1.spline_weight", 2) - CUBIC, spline_order=CUBIC)
    if dims.state_size != meta.state_size:
        raise ValueError(f"{source}: the graph's GRUs hold a state of {dims.state_size}, "
                         f"metadata state_size is {meta.state_size}")
    return dims


def state_dict_from_onnx(path: str | Path) -> tuple[ModelDims, dict, dict]:
    """-> (dims, state_dict for KFusion(dims), meta), meta holding model_version, config_hash,
    mean_face (68, 2), emotions and lip_seal_pct. ValueError, naming what was expected and what was
    found, for any file that is not a streaming KFusion export."""
    import onnx
    import torch
    from onnx import numpy_helper

    from engine.session import ModelMeta
    from export.onnx_export import verify_dynamic

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    proto = onnx.load(str(path))
    meta = ModelMeta.from_props({p.key: p.value for p in proto.metadata_props}, str(path))
    meta.check_engine(str(path))  # contract version, sample rate, features, landmark layout
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    sd, centres, unused = _map_weights(proto, inits)
    dims = _dims(sd, meta, str(path))
    model = KFusion(dims)
    for kan in KAN_LAYERS:
        layer = getattr(model, kan)
        want = (layer.knots[2:-2] / layer.step).numpy()
        got = centres.get(kan)
        if got is None or got.shape != want.shape or not np.allclose(got, want, atol=1e-5):
            raise ValueError(f"{path}: expected {kan}'s cubic spline centres {want.round(4).tolist()}, "
                             f"found {None if got is None else got.round(4).tolist()}")
    sd.update({f"{kan}.knots": getattr(model, kan).knots.numpy() for kan in KAN_LAYERS})
    ref = model.state_dict()
    missing, extra = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
    bad_shapes = [f"{k}: expected {tuple(ref[k].shape)}, found {sd[k].shape}" for k in ref
                  if k in sd and tuple(sd[k].shape) != tuple(ref[k].shape)]
    if missing or extra or unused or bad_shapes:
        raise ValueError(f"{path}: the graph does not match KFusion({dims}): missing weights {missing}, "
                         f"unexpected {extra + sorted(unused)}, shape mismatches {bad_shapes}")
    state_dict = {k: torch.from_numpy(np.array(sd[k], np.float32)) for k in ref}
    model.load_state_dict(state_dict)
    model.eval()
    try:
        verify_dynamic(path, model, dims, meta.mean_face)
    except ValueError as exc:
        raise ValueError(f"{path}: the weights rebuilt from the graph do not reproduce it ({exc})") from exc
    info = {"model_version": meta.model_version, "config_hash": meta.config_hash, "mean_face": meta.mean_face,
            "emotions": list(meta.emotions), "lip_seal_pct": meta.lip_seal_pct}
    return dims, state_dict, info
