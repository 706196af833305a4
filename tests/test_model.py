"""KFusion torch model: KAN B-spline properties, causality and state, head motion, checkpoints, training loss."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.face import apply_head_motion as np_head_motion
from export.kan import KANLinear, b_spline_bases, cox_de_boor_bases, cubic_bases, uniform_knots
from export.model import EMOTIONS, KFusion, ModelDims, apply_head_motion

TINY = {"conv_channels": 8, "enc_dim": 12, "global_hidden": 10, "global_layers": 2, "ctx_in": 6,
        "ctx_hidden": 5, "emo_dim": 3, "kan_hidden": 7, "window_hops": 6}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def tiny(**kw) -> KFusion:
    return KFusion(ModelDims(**{**TINY, **kw})).eval()


def inputs(model: KFusion, b: int, t: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = model.dims
    return (torch.randn(b, t, d.window_hops, d.n_features, generator=g),
            100 + 30 * torch.rand(b, 68, 2, generator=g), torch.zeros(b, d.n_emotions))


def test_b_spline_bases_partition_unity_and_match_scipy():
    from scipy.interpolate import BSpline

    grid_size, order, lo, hi = 5, 3, -2.0, 2.0
    knots = uniform_knots(grid_size, order, (lo, hi))
    x = torch.linspace(lo, hi - 1e-4, 401)
    bases = b_spline_bases(x, knots, order, (hi - lo) / grid_size)  # (401, G + k)
    assert bases.shape == (401, grid_size + order)
    assert torch.all(bases >= -1e-7)
    np.testing.assert_allclose(bases.sum(-1).numpy(), 1.0, atol=1e-5)  # partition of unity on the grid
    ref = BSpline.design_matrix(x.double().numpy(), knots.double().numpy(), order).toarray()
    np.testing.assert_allclose(bases.numpy(), ref, atol=1e-5)
    far = b_spline_bases(torch.tensor([knots[0].item() - 0.1, knots[-1].item() + 0.1]), knots, order, 0.8)
    assert torch.all(far == 0)  # outside the extended grid only the SiLU base path is active


def test_cubic_closed_form_equals_cox_de_boor_everywhere():
    from scipy.interpolate import BSpline

    knots = uniform_knots(5, 3, (-2.0, 2.0))
    x = torch.linspace(-4.0, 4.0, 16001)  # inside, on and beyond the extended grid
    closed, recursive = cubic_bases(x, knots, 0.8), cox_de_boor_bases(x, knots, 3, 0.8)
    np.testing.assert_allclose(closed.numpy(), recursive.numpy(), atol=2e-6)
    for order in (1, 2):  # the recursion (used for other orders) against scipy
        k = uniform_knots(4, order, (-1.0, 1.0))
        xs = torch.linspace(-1.0, 1.0 - 1e-4, 301)
        ref = BSpline.design_matrix(xs.double().numpy(), k.double().numpy(), order).toarray()
        np.testing.assert_allclose(b_spline_bases(xs, k, order, 0.5).numpy(), ref, atol=1e-5)


def test_lip_gap_corr_loss_rewards_timing_not_size():
    from export.train import lip_gap_corr_loss

    t = torch.arange(90.0)
    truth = torch.zeros(2, 90, 68, 2)
    truth[..., 66, 1] = 5.0 * torch.sin(t / 4.0)  # lower inner lip moves; the upper one is still
    mask = torch.ones(2, 90)
    damped = truth * 0.3
    assert lip_gap_corr_loss(damped, truth, mask).item() < 1e-5  # a damped but in-time mouth costs nothing
    assert lip_gap_corr_loss(-truth, truth, mask).item() == pytest.approx(2.0, abs=1e-4)  # anti-phase
    shifted = torch.roll(truth, 6, dims=1)
    assert 0.1 < lip_gap_corr_loss(shifted, truth, mask).item() < 2.0
    still = torch.zeros_like(truth)  # a truth that never moves is left out rather than dividing by zero
    assert lip_gap_corr_loss(truth, still, mask).item() == 0.0


def test_lip_gap_loss_pays_a_mouth_that_does_not_shut():
    from export.train import TrainConfig, loss_terms, point_weights

    cfg = TrainConfig(dims=ModelDims(**TINY), synth_root="", lip_gap_weight=2.0)
    model = KFusion(cfg.dims)
    truth = (torch.randn(68, 2, generator=torch.Generator().manual_seed(0)) * 20).expand(1, 30, 68, 2).clone()
    truth[:, 10:20, 65:68, 1] = truth[:, 10:20, 61:64, 1]  # frames 10-19: the inner lips meet (gap 0)
    batch = {"canonical": truth, "head": torch.zeros(1, 30, 4), "mask": torch.ones(1, 30)}
    w = point_weights(cfg)
    assert loss_terms(model, truth, batch["head"], batch, cfg, w)["lip_gap"].item() == 0.0
    ajar = truth.clone()
    ajar[:, :, 65:68, 1] += 1.5  # lower inner lip 1.5 px too low on every frame: the gap is 1.5 px too wide
    terms = loss_terms(model, ajar, batch["head"], batch, cfg, w)
    assert terms["lip_gap"].item() == pytest.approx(1.5, abs=1e-5)
    plain = loss_terms(model, ajar, batch["head"], batch, TrainConfig(dims=ModelDims(**TINY), synth_root=""), w)
    assert (terms["loss"] - plain["loss"]).item() == pytest.approx(2.0 * 1.5, abs=1e-4)  # weighted into the loss
    synth_only = TrainConfig(dims=ModelDims(**TINY), synth_root="", lip_gap_weight=2.0, lip_gap_synth_only=True)
    for flag, want in ((0.0, 0.0), (1.0, 1.5)):  # a real (tracked) row is left out; a synthetic one counts
        rows = {**batch, "synthetic": torch.tensor([flag])}
        assert loss_terms(model, ajar, rows["head"], rows, synth_only, w)["lip_gap"].item() == pytest.approx(want, abs=1e-5)


def test_closure_loss_pays_lips_that_do_not_meet_where_synthetic_lips_shut():
    from export.train import TrainConfig, closure_loss, loss_terms, point_weights

    truth = (torch.randn(68, 2, generator=torch.Generator().manual_seed(1)) * 20).expand(2, 30, 68, 2).clone()
    truth[:, :, 65:68, 1] = truth[:, :, 61:64, 1] + 6.0  # lips 6 px apart ...
    truth[:, 10:20, 65:68, 1] = truth[:, 10:20, 61:64, 1]  # ... except frames 10-19, where they meet
    mask = torch.ones(2, 30)
    batch = {"canonical": truth, "head": torch.zeros(2, 30, 4), "mask": mask, "synthetic": torch.tensor([1.0, 0.0])}
    assert closure_loss(truth, batch, mask).item() == 0.0
    ajar = truth.clone()
    ajar[:, :, 65:68, 1] += 1.5  # every frame 1.5 px too open: only row 0's shut frames 10-19 count
    assert closure_loss(ajar, batch, mask).item() == pytest.approx(1.5, abs=1e-5)
    crossed = truth.clone()
    crossed[:, :, 65:68, 1] -= 1.5  # lips that cross by 1.5 px cost as much as lips 1.5 px apart
    assert closure_loss(crossed, batch, mask).item() == pytest.approx(1.5, abs=1e-5)
    wide = truth.clone()
    wide[:, :5, 65:68, 1] += 4.0  # open frames (0-4) are left to the other terms
    assert closure_loss(wide, batch, mask).item() == 0.0
    real_only = {**batch, "synthetic": torch.tensor([0.0, 0.0])}  # tracked lips: no exact closures, no term
    assert closure_loss(ajar, real_only, mask).item() == 0.0
    cfg = TrainConfig(dims=ModelDims(**TINY), synth_root="", closure_weight=3.0)
    w, model = point_weights(cfg), KFusion(cfg.dims)
    plain = loss_terms(model, ajar, batch["head"], batch, TrainConfig(dims=ModelDims(**TINY), synth_root=""), w)
    weighted = loss_terms(model, ajar, batch["head"], batch, cfg, w)
    assert (weighted["loss"] - plain["loss"]).item() == pytest.approx(3.0 * 1.5, abs=1e-4)


def test_kan_layer_rejects_wrong_width_and_learns_a_curve():
    layer = KANLinear(1, 1, grid_size=8)
    with pytest.raises(ValueError, match="expects 1 input"):
        layer(torch.zeros(4, 2))
    x = torch.linspace(-1.9, 1.9, 200)[:, None]
    y = torch.sin(3 * x)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = ((layer(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01  # one KAN edge fits sin(3x), which a single linear+SiLU unit cannot


def test_kan_layer_exports_and_matches_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    layer = KANLinear(6, 4).eval()
    x = torch.randn(3, 5, 6) * 1.5
    path = tmp_path / "kan.onnx"
    torch.onnx.export(layer, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "b", 1: "t"}}, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(2, 9, 6) * 1.5
    (y,) = sess.run(None, {"x": x2.numpy()})
    np.testing.assert_allclose(y, layer(x2).detach().numpy(), atol=1e-5)


def test_head_motion_matches_engine_face():
    rng = np.random.default_rng(1)
    shapes = rng.uniform(40, 220, size=(3, 7, 68, 2))
    head = np.stack([rng.normal(0, 0.05, (3, 7)), rng.normal(0, 0.1, (3, 7)),
                     rng.normal(0, 4, (3, 7)), rng.normal(0, 4, (3, 7))], -1)
    ours = apply_head_motion(torch.from_numpy(shapes), torch.from_numpy(head)).numpy()
    np.testing.assert_allclose(ours, np_head_motion(shapes, head), atol=1e-9)


def test_streaming_model_chunks_equal_one_call_and_is_causal():
    model = tiny()
    feats, ident, emo = inputs(model, 2, 12)
    state0 = model.initial_state(2)
    assert state0.shape == (2, model.dims.state_size) == (2, 2 * 10 + 5)
    with torch.no_grad():
        whole, s_whole = model(feats, ident, emo, state0)
        parts, state = [], state0
        for a, b in ((0, 1), (1, 5), (5, 12)):
            out, state = model(feats[:, a:b], ident, emo, state)
            parts.append(out)
        changed = feats.clone()
        changed[:, 8:] += 1.0
        later, _ = model(changed, ident, emo, state0)
    np.testing.assert_allclose(torch.cat(parts, 1).numpy(), whole.numpy(), atol=1e-4)
    np.testing.assert_allclose(state.numpy(), s_whole.numpy(), atol=1e-6)
    np.testing.assert_array_equal(later[:, :8].numpy(), whole[:, :8].numpy())  # causal: no peeking
    assert not np.allclose(later[:, 8:].numpy(), whole[:, 8:].numpy())


def test_offline_model_sees_the_whole_utterance():
    model = tiny(bidirectional=True, lookahead_ms=0.0)
    assert model.dims.state_size == 0
    feats, ident, emo = inputs(model, 1, 10)
    with torch.no_grad():
        out, _ = model(feats, ident, emo, model.initial_state(1))
        changed = feats.clone()
        changed[:, 7:] += 1.0
        out2, _ = model(changed, ident, emo, model.initial_state(1))
    assert out.shape == (1, 10, 68, 2)
    assert not np.allclose(out[:, :7].numpy(), out2[:, :7].numpy())  # the backward GRU carries the future


def test_emotion_input_changes_output_and_zeros_mean_infer():
    model = tiny()
    feats, ident, emo = inputs(model, 1, 4)
    onehot = torch.zeros(1, len(EMOTIONS))
    onehot[0, EMOTIONS.index("happy")] = 1.0
    with torch.no_grad():
        a, _ = model(feats, ident, emo, model.initial_state(1))
        b, _ = model(feats, ident, onehot, model.initial_state(1))
    assert EMOTIONS[0] == "neutral" and len(EMOTIONS) == 8
    assert not np.allclose(a.numpy(), b.numpy())


def test_model_dims_validation_names_the_field():
    with pytest.raises(ValueError, match="window_hops must be >= 5"):
        ModelDims(window_hops=3)
    with pytest.raises(ValueError, match="unknown fields"):
        ModelDims.from_dict({"hidden": 3})
    assert ModelDims.from_dict(ModelDims().to_dict()) == ModelDims()


def test_checkpoint_round_trip_and_predict_on_speech(tmp_path, speech_16k):
    from engine.timing import n_frames
    from export.predict import load_checkpoint, predict_segment, save_checkpoint

    model = tiny()
    mean_face = np.full((68, 2), 128.0, np.float32)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"seed": 0}, mean_face, "test-1")
    loaded, dims, meta = load_checkpoint(path)
    assert dims == model.dims and meta["model_version"] == "test-1" and len(meta["config_hash"]) == 16
    track = predict_segment(loaded, speech_16k, mean_face)
    assert track.shape == (n_frames(len(speech_16k), 30), 68, 2) and np.isfinite(track).all()
    np.testing.assert_array_equal(track, predict_segment(model, speech_16k, mean_face))
    with pytest.raises(ValueError, match="identity must have shape"):
        predict_segment(loaded, speech_16k, mean_face[:10])
    with pytest.raises(ValueError, match="emotion must be one of"):
        predict_segment(loaded, speech_16k, mean_face, emotion="bored")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):  # noqa: B017 - torch raises its own unpickling error types
        load_checkpoint(tmp_path / "bad.pt")


def test_loss_is_zero_on_perfect_prediction_and_training_reduces_it():
    from export.train import TrainConfig, loss_terms, point_weights

    cfg = TrainConfig(dims=ModelDims(**TINY), synth_root="")
    model = KFusion(cfg.dims)
    w = point_weights(cfg)
    feats, ident, emo = inputs(model, 4, 20, seed=3)
    t = torch.arange(20.0)[None, :, None, None]
    target = ident[:, None] + torch.sin(t / 3.0) * 2.0  # a moving face
    batch = {"canonical": target, "head": torch.zeros(4, 20, 4), "mask": torch.ones(4, 20)}
    perfect = loss_terms(model, target, batch["head"], batch, cfg, w)
    assert perfect["l1"] == 0 and perfect["vel"] == 0 and perfect["head"] == 0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        canon, head, _ = model.parts(feats, ident, emo, model.initial_state(4))
        loss = loss_terms(model, canon, head, batch, cfg, w)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_batch_rows_say_whether_they_are_synthetic():
    from export.dataset import BatchSampler, Item

    def item(key: str, frames: int) -> Item:
        return Item(key, key, np.zeros((frames, 8, 90), np.float32), np.zeros((frames, 68, 2), np.float32),
                    np.zeros((frames, 4), np.float32), np.zeros((68, 2), np.float32), -1)

    sampler = BatchSampler({"pack": [item("pack", 40)], "synth": [item("synth", 60)]}, crop_frames=30,
                           batch_size=64, seed=0, emotion_dropout=0.5)
    mixed = sampler.batch({"pack": 0.5, "synth": 0.5})
    assert mixed["synthetic"].shape == (64,) and 0 < mixed["synthetic"].sum() < 64
    assert sampler.batch({"pack": 1.0})["synthetic"].sum() == 0
    assert sampler.batch({"synth": 1.0})["synthetic"].sum() == 64


def test_kan_linear_cubic_fast_path_equals_the_sum_over_edges():
    """The basis-major fast path (transposed weight, 1/6 folded in) computes sum_i sum_c w_oic B_c(x_i)."""
    torch.manual_seed(0)
    kan = KANLinear(13, 7).eval()
    with torch.no_grad():
        kan.spline_weight.normal_(0.0, 0.3)
    x = torch.randn(5, 3, 13) * 1.5
    edges = torch.einsum("...ic,oic->...o", cox_de_boor_bases(x, kan.knots, 3, kan.step),
                         kan.spline_weight * kan.spline_scaler.unsqueeze(-1))
    want = torch.nn.functional.linear(torch.nn.functional.silu(x), kan.base_weight) + edges
    with torch.no_grad():
        np.testing.assert_allclose(kan(x).numpy(), want.numpy(), atol=2e-5)


def test_mel_encoder_as_matrix_products_equals_the_conv_layers():
    """_mel_encode (one GEMM per convolution, hop-major) gives what Conv1d -> GELU -> flatten -> mel_proj gives."""
    torch.manual_seed(1)
    model = KFusion(ModelDims()).eval()
    mel = torch.randn(7, ModelDims().window_hops, 80)
    with torch.no_grad():
        want = model.mel_proj(model.mel_conv(mel.transpose(1, 2)).flatten(1))
        np.testing.assert_allclose(model._mel_encode(mel).numpy(), want.numpy(), atol=1e-5)
