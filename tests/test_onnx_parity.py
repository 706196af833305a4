"""The exported ONNX model: torch parity on real speech, chunked = one call, dynamic axes, metadata contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from engine.session import ModelSession, default_model_path

CHUNKS = (1, 4, 9, 2)  # frames per call, repeated until the clip ends


@pytest.fixture(scope="module")
def shipped() -> ModelSession:
    path = default_model_path()
    if not path.is_file():
        pytest.skip(f"no shipped model at {path}")
    return ModelSession(path, providers="cpu")


def speech_windows(speech_16k, meta) -> np.ndarray:
    from engine import features
    from engine.timing import gather_windows, n_frames, samples_needed

    n = n_frames(len(speech_16k), int(meta.fps))
    need = samples_needed(n - 1, int(meta.fps), meta.lookahead_ms)
    audio = np.concatenate([speech_16k, np.zeros(max(0, need - len(speech_16k)) + 160, np.float32)])
    hops = features.extract(audio)
    return gather_windows(hops, features.SILENCE, n, int(meta.fps), meta.lookahead_ms, meta.window_hops)


def run_chunked(sess: ModelSession, feats: np.ndarray, identity: np.ndarray) -> np.ndarray:
    """Feed (B, T, W, F) in uneven chunks, carrying the state, as a stream does."""
    state = sess.initial_state(len(feats))
    outs, a, i = [], 0, 0
    while a < feats.shape[1]:
        b = min(feats.shape[1], a + CHUNKS[i % len(CHUNKS)])
        lm, state = sess.run(feats[:, a:b], identity, state)
        outs.append(lm)
        a, i = b, i + 1
    return np.concatenate(outs, axis=1)


def test_shipped_model_loads_with_contract(shipped):
    m = shipped.meta
    assert m.contract_version == "1" and m.landmark_layout == "ibug68" and m.coordinate_frame == "canonical256"
    assert m.emotions == ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")
    assert m.n_features == 90 and m.feature_version == "kf1" and m.fps == 30
    assert m.mean_face.shape == (68, 2) and 0 <= m.lookahead_ms <= 200 and m.state_size > 0
    assert default_model_path().stat().st_size < 8_000_000


def test_shipped_model_streams_real_speech_in_chunks_like_one_call(shipped, speech_16k):
    feats = speech_windows(speech_16k, shipped.meta)[None].astype(np.float32)  # (1, T, W, F)
    ident = shipped.meta.mean_face[None]
    whole, _ = shipped.run(feats, ident, shipped.initial_state(1))
    chunked = run_chunked(shipped, feats, ident)
    assert whole.shape == (1, feats.shape[1], 68, 2)
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    # landmarks stay on the face: within the 256 px canonical crop
    assert np.all((whole > -20) & (whole < 276))


def test_shipped_model_axes_are_dynamic(shipped):
    for name in ("feats", "identity", "emotion", "state"):
        dims = next(d for d in shipped._sess.get_inputs() if d.name == name).shape
        assert isinstance(dims[0], str), f"{name} batch axis is fixed: {dims}"
    feats_shape = next(d for d in shipped._sess.get_inputs() if d.name == "feats").shape
    assert isinstance(feats_shape[1], str), f"feats time axis is fixed: {feats_shape}"
    rng = np.random.default_rng(0)
    w, f = shipped.meta.window_hops, shipped.meta.n_features
    for b, t in ((1, 1), (5, 3), (2, 17)):
        feats = rng.normal(size=(b, t, w, f)).astype(np.float32)
        lm, st = shipped.run(feats, np.repeat(shipped.meta.mean_face[None], b, 0), shipped.initial_state(b))
        assert lm.shape == (b, t, 68, 2) and st.shape == (b, shipped.meta.state_size)
    # stacked streams are independent rows: batch of two equals two single calls
    feats = rng.normal(size=(2, 6, w, f)).astype(np.float32)
    idents = np.stack([shipped.meta.mean_face, shipped.meta.mean_face + 3.0])
    both, _ = shipped.run(feats, idents, shipped.initial_state(2))
    one, _ = shipped.run(feats[1:], idents[1:], shipped.initial_state(1))
    np.testing.assert_allclose(both[1:], one, atol=1e-4)


def test_export_matches_torch_on_real_speech_chunked(tmp_path, speech_16k):
    torch = pytest.importorskip("torch")
    from export.model import KFusion, ModelDims
    from export.onnx_export import export_onnx
    from export.predict import audio_windows, save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = KFusion(ModelDims(conv_channels=16, enc_dim=24, global_hidden=24, ctx_in=8, ctx_hidden=8,
                              kan_hidden=12)).eval()
    mean_face = np.full((68, 2), 128.0, np.float32)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, model, {"test": True}, mean_face, "tiny-1")
    out = tmp_path / "tiny.onnx"
    props = export_onnx(ckpt, out)
    assert props["state_size"] == str(model.dims.state_size)
    onnx.checker.check_model(onnx.load(str(out)))
    sess = ModelSession(out, providers="cpu")
    assert props["lip_seal_pct"] == "0" and sess.lip_seal_pct == 0.0  # no seal unless the export asks for one
    n = 60
    feats = audio_windows(speech_16k, n, model.dims)[None].astype(np.float32)
    ident = mean_face[None]
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(feats), torch.from_numpy(ident), torch.zeros(1, 8),
                       model.initial_state(1))
    np.testing.assert_allclose(run_chunked(sess, feats, ident), ref.numpy(), atol=1e-4)


def test_metadata_mismatch_is_refused(tmp_path, shipped):
    proto = onnx.load(str(shipped.path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["mean_face"]) and props["config_hash"]

    def write(name: str, change: dict) -> str:
        del proto.metadata_props[:]
        for k, v in {**props, **change}.items():
            if v is not None:
                e = proto.metadata_props.add()
                e.key, e.value = k, v
        path = tmp_path / name
        onnx.save(proto, str(path))
        return str(path)

    with pytest.raises(ValueError, match=r"n_features: engine expects 90, model has 91"):
        ModelSession(write("f91.onnx", {"n_features": "91"}), providers="cpu")
    with pytest.raises(ValueError, match="feature_version"):
        ModelSession(write("fv.onnx", {"feature_version": "kf0"}), providers="cpu")
    with pytest.raises(ValueError, match="lacks"):
        ModelSession(write("nometa.onnx", {"kfusion_contract": None}), providers="cpu")


def test_export_refuses_offline_checkpoint(tmp_path):
    pytest.importorskip("torch")
    from export.model import KFusion, ModelDims
    from export.onnx_export import export_onnx
    from export.predict import save_checkpoint

    model = KFusion(ModelDims(bidirectional=True, lookahead_ms=0.0, global_hidden=8, ctx_hidden=4))
    save_checkpoint(tmp_path / "off.pt", model, {}, np.zeros((68, 2), np.float32), "off-1")
    with pytest.raises(ValueError, match="offline"):
        export_onnx(tmp_path / "off.pt", tmp_path / "off.onnx")


def test_one_large_batch_does_not_keep_its_memory(shipped):
    """ONNX Runtime's CPU arena would keep a catch-up burst's memory for good (9.6 MiB after 256 rows here);
    the engine's session runs without it, so memory comes back to about where it was."""
    import subprocess
    import sys

    code = (
        "from engine.session import ModelSession\n"
        "from engine.batcher import silence_batch\n"
        "def rss():\n"
        "    return int([x for x in open('/proc/self/status') if x.startswith('VmRSS:')][0].split()[1]) / 1024\n"
        "s = ModelSession(None, 'cpu')\n"
        "[s.run(*silence_batch(s, 8)) for _ in range(5)]\n"
        "before = rss()\n"
        "s.run(*silence_batch(s, 256))\n"
        "[s.run(*silence_batch(s, 8)) for _ in range(5)]\n"
        "print(rss() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    grown_mib = float(out.stdout.strip().splitlines()[-1])
    assert grown_mib < 6.0, f"a 256-row call left the process {grown_mib:.1f} MiB larger"
    assert shipped._sess.get_session_options().enable_cpu_mem_arena is False
