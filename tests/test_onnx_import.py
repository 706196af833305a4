"""Torch weights rebuilt from the shipped ONNX (export/onnx_import.py): they reproduce it on real speech, they
re-export to the same model, a file that is not a KFusion export is refused, and `kfusion train --init-from`
starts from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from engine.face import inner_lip_gap
from engine.session import ModelSession, default_model_path
from export.model import KFusion, ModelDims
from export.onnx_import import state_dict_from_onnx

TOL_PX = 1e-4
SHIPPED = default_model_path()


@pytest.fixture(scope="module")
def rebuilt():
    if not SHIPPED.is_file():
        pytest.skip(f"no shipped model at {SHIPPED}")
    return state_dict_from_onnx(SHIPPED)


@pytest.fixture(scope="module")
def model(rebuilt) -> KFusion:
    dims, state_dict, _ = rebuilt
    net = KFusion(dims)
    net.load_state_dict(state_dict)
    return net.eval()


@pytest.fixture(scope="module")
def speech(pack_manifest, rebuilt) -> dict[str, np.ndarray]:
    """The first val clip of the pack as one batch: feats (1, T, W, F), mean-face identity, zero emotion and state."""
    from engine.timing import n_frames
    from export.data.pack import PACK_DIR, load_audio
    from export.predict import audio_windows

    dims, _, meta = rebuilt
    clip = next(c for c in pack_manifest["clips"] if c["split"] == "val")
    audio = load_audio(Path(PACK_DIR) / clip["audio"])
    return {"feats": audio_windows(audio, n_frames(len(audio), dims.fps), dims)[None].astype(np.float32),
            "identity": meta["mean_face"][None], "state": np.zeros((1, dims.state_size), np.float32),
            "emotion": np.zeros((1, dims.n_emotions), np.float32)}


def onnx_outputs(path, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return ModelSession(path, providers="cpu").run_raw(**feed)


def max_diff(a: tuple, b: tuple) -> float:
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b, strict=True))


def test_rebuilt_weights_match_onnx_runtime_on_speech(model, speech):
    with torch.no_grad():
        ours = model(*(torch.from_numpy(speech[k]) for k in ("feats", "identity", "emotion", "state")))
    ours = tuple(t.numpy() for t in ours)
    shipped = onnx_outputs(SHIPPED, speech)
    assert ours[0].shape == (1, speech["feats"].shape[1], 68, 2)
    assert np.ptp(inner_lip_gap(ours[0][0])) > 1.0  # px: the mouth opens and closes with the speech
    diff = max_diff(ours, shipped)
    print(f"torch (rebuilt) vs ONNX Runtime (shipped), landmarks and state_out: max |diff| {diff:.2e}")
    assert diff < TOL_PX


def test_load_checkpoint_reads_an_onnx_file_as_the_same_model(model, rebuilt):
    """export.predict.load_checkpoint (what --sync-from and the offline tools use) takes the .onnx as well."""
    from export.predict import load_checkpoint

    net, dims, meta = load_checkpoint(SHIPPED)
    assert dims == rebuilt[0] and not net.training and meta["model_version"] == rebuilt[2]["model_version"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in net.state_dict().items())


def test_reexport_gives_the_shipped_model(rebuilt, model, speech, tmp_path):
    from export.onnx_export import export_onnx
    from export.predict import save_checkpoint
    from export.train import init_weights

    dims, state_dict, meta = rebuilt
    ckpt = tmp_path / "rebuilt.pt"
    save_checkpoint(ckpt, model, {}, meta["mean_face"], meta["model_version"])
    assert all(torch.equal(v, state_dict[k]) for k, v in init_weights(str(ckpt), dims).items())  # .pt path
    props = export_onnx(ckpt, tmp_path / "again.onnx", lip_seal_pct=meta["lip_seal_pct"])
    shipped_props = {p.key: p.value for p in onnx.load(str(SHIPPED)).metadata_props}
    # config_hash names the training config, which the ONNX does not hold; every other promise is the same
    assert {k: v for k, v in props.items() if k != "config_hash"} == {
        k: v for k, v in shipped_props.items() if k != "config_hash"}
    diff = max_diff(onnx_outputs(tmp_path / "again.onnx", speech), onnx_outputs(SHIPPED, speech))
    print(f"re-exported vs shipped ONNX on speech: max |diff| {diff:.2e}")
    assert diff < TOL_PX


def tiny_onnx(path, props: dict[str, str], extra_init: bool = False):
    """y = x @ w, with the given metadata_props; or, with extra_init, the shipped graph plus a stray weight."""
    from onnx import TensorProto, helper, numpy_helper

    if extra_init:
        proto = onnx.load(str(SHIPPED))
        proto.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "onnx::Stray_1"))
    else:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
            [numpy_helper.from_array(np.ones((4, 2), np.float32), "w")])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        del proto.metadata_props[:]
        for k, v in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("case, expected", [
    ("no metadata", r"not a kfusion model, metadata_props lacks \['kfusion_contract'"),
    ("kfusion metadata, other graph", r"expected KFusion weight mel_conv\.0\.bias in the graph, found none"),
    ("shipped graph, stray weight", r"does not match KFusion\(ModelDims\(.*unexpected \['onnx::Stray_1 \[3\]"),
])
def test_non_kfusion_onnx_is_refused(case, expected, tmp_path):
    if not SHIPPED.is_file():
        pytest.skip(f"no shipped model at {SHIPPED}")
    props = {} if case == "no metadata" else {p.key: p.value for p in onnx.load(str(SHIPPED)).metadata_props}
    path = tiny_onnx(tmp_path / "other.onnx", props, extra_init=case.endswith("stray weight"))
    with pytest.raises(ValueError, match=expected):
        state_dict_from_onnx(path)


def test_train_init_from_onnx_starts_from_its_weights(rebuilt, monkeypatch, tmp_path):
    """`kfusion train --init-from shipped.onnx --lr 0 --steps 1` on a few tiny crops saves the shipped weights
    (normaliser included) unchanged: lr 0 leaves AdamW's step and decay at nothing."""
    from engine.cli import main
    from export import train
    from export.dataset import Item

    dims, state_dict, meta = rebuilt
    rng = np.random.default_rng(0)
    face = meta["mean_face"]
    items = [Item(f"tiny{k}", "pack", rng.normal(size=(12, dims.window_hops, dims.n_features)).astype(np.float32),
                  (face + rng.normal(0, 1, (12, 68, 2))).astype(np.float32), np.zeros((12, 4), np.float32), face, -1)
             for k in range(3)]
    monkeypatch.setattr(train, "load_pools", lambda cfg: ({"pack": items[:2]}, items[2:], face, []))
    rc = main(["train", "--init-from", str(SHIPPED), "--steps", "1", "--lr", "0", "--batch-size", "2",
               "--synth-root", "", "--out", str(tmp_path / "run")])
    assert rc == 0
    saved = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)["state_dict"]
    assert saved.keys() == state_dict.keys()
    assert all(torch.equal(saved[k], v) for k, v in state_dict.items())
    with pytest.raises(ValueError, match=r"lookahead_ms 80\.0 \(this run: 40\.0\)"):
        train.init_weights(str(SHIPPED), ModelDims(lookahead_ms=40.0))
