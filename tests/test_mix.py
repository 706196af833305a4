"""`kfusion mix`: weight-space mixes of two fine-tunes (export/mix.py) give back each end and average between."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from engine.session import default_model_path

SHIPPED = default_model_path()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """The shipped model (as .onnx) and a 'fine-tune' of it: every trained weight moved, the KAN scalers too."""
    from export.predict import load_checkpoint, save_checkpoint

    if not SHIPPED.is_file():
        pytest.skip(f"no shipped model at {SHIPPED}")
    model, _, meta = load_checkpoint(SHIPPED)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(1.0 + 0.05 * torch.randn(p.shape, generator=gen))
            if name.endswith("spline_scaler"):
                p.mul_(1.5)  # a scaler away from 1, as training leaves it
    path_b = tmp_path_factory.mktemp("mix") / "b.pt"
    save_checkpoint(path_b, model, {"test": "perturbed"}, meta["mean_face"], "stream-test-b")
    return str(SHIPPED), str(path_b)


def outputs(model, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    d = model.dims
    feats = torch.randn(2, 12, d.window_hops, d.n_features, generator=gen)
    ident = torch.full((2, 68, 2), 128.0) + torch.randn(2, 68, 2, generator=gen)
    with torch.no_grad():
        lm, state = model(feats, ident, torch.zeros(2, d.n_emotions), torch.zeros(2, d.state_size))
    return lm.numpy(), state.numpy()


def max_diff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_each_end_gives_its_model_back_and_the_middle_averages(two_models):
    from export.mix import folded_state, mix_models
    from export.predict import load_checkpoint

    path_a, path_b = two_models
    model_a, model_b = load_checkpoint(path_a)[0], load_checkpoint(path_b)[0]
    assert max_diff(outputs(model_a), outputs(model_b)) > 0.1  # px: B really is another model
    assert max_diff(outputs(mix_models(path_a, path_b, 0.0)[0]), outputs(model_a)) < 1e-4
    assert max_diff(outputs(mix_models(path_a, path_b, 1.0)[0]), outputs(model_b)) < 1e-4
    half, _, _ = mix_models(path_a, path_b, 0.5)
    sa, sb, sh = folded_state(model_a), folded_state(model_b), half.state_dict()
    for key in ("kan2.spline_weight", "global_gru.weight_hh_l0", "mel_proj.weight"):
        assert torch.allclose(sh[key], 0.5 * (sa[key] + sb[key]), atol=1e-6), key
    assert torch.equal(sh["kan1.spline_scaler"], torch.ones_like(sh["kan1.spline_scaler"]))


def test_cli_writes_a_checkpoint_that_exports(two_models, tmp_path):
    from engine.cli import main
    from export.predict import load_checkpoint

    out = tmp_path / "mix.pt"
    assert main(["mix", *two_models, "--alpha", "0.25", "--out", str(out)]) == 0
    _, _, meta = load_checkpoint(out)
    assert meta["model_version"].endswith("-mix25") and meta["config"]["mix"]["alpha"] == 0.25
    assert main(["export", str(out), "--out", str(tmp_path / "mix.onnx")]) == 0


def test_bad_mixes_are_refused(two_models, tmp_path):
    from export.mix import mix_models
    from export.predict import load_checkpoint, save_checkpoint

    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        mix_models(*two_models, 1.5)
    model, _, meta = load_checkpoint(two_models[1])
    with torch.no_grad():
        model.feat_mean.add_(1.0)
    other = tmp_path / "other.pt"
    save_checkpoint(other, model, {}, meta["mean_face"], "stream-other")
    with pytest.raises(ValueError, match="differ in feat_mean"):
        mix_models(two_models[0], str(other), 0.5)
