"""Training augmentation (export/train.py: augment) on real speech features: what each option may change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import features as fx
from export.train import TrainConfig, augment


@pytest.fixture(scope="module")
def feats(speech_16k):
    hops = fx.extract(speech_16k)  # (K, F) real speech
    t, w = 40, 8
    win = np.stack([hops[i:i + w] for i in range(t)])  # (T, W, F)
    return torch.from_numpy(np.stack([win, win[::-1].copy(), win])).float()  # (3, T, W, F)


def _run(feats, **over):
    base = {"gain_db": 0.0, "freq_mask_bands": 0, "eq_db": 0.0}
    cfg = TrainConfig(synth_root="", **{**base, **over})
    return augment(feats, feats.mean(dim=(0, 1, 2)), cfg, torch.Generator().manual_seed(3))


def test_everything_off_changes_nothing(feats):
    assert torch.equal(_run(feats), feats)


def test_equaliser_is_one_smooth_curve_per_crop_on_loud_bins_only(feats):
    out = _run(feats, eq_db=6.0)
    mel, new = feats[..., : fx.N_MELS], out[..., : fx.N_MELS]
    loud = mel > float(np.log(fx.MEL_FLOOR)) + 2.0
    assert torch.equal(new[~loud], mel[~loud]), "silent bins stay silent"
    assert torch.equal(out[..., fx.N_MELS:], feats[..., fx.N_MELS:]), "the prosodic features are untouched"
    x = np.linspace(-1.0, 1.0, fx.N_MELS)
    basis = np.stack([x, np.cos(x * np.pi / 2)], 1)  # tilt and bow
    curves = []
    for b in range(len(feats)):
        d_db = ((new[b] - mel[b]) / float(np.log(10) / 10)).numpy()  # (T, W, 80)
        m = loud[b].numpy()
        per_band = np.array([d_db[..., k][m[..., k]].mean() if m[..., k].any() else np.nan for k in range(fx.N_MELS)])
        spread = max((np.ptp(d_db[..., k][m[..., k]]) for k in range(fx.N_MELS) if m[..., k].any()), default=0.0)
        assert spread < 1e-3, "the same curve for every frame of a crop"
        ok = np.isfinite(per_band)
        coef, *_ = np.linalg.lstsq(basis[ok], per_band[ok], rcond=None)
        np.testing.assert_allclose(basis[ok] @ coef, per_band[ok], atol=1e-3)  # a tilt plus a bow, nothing else
        assert abs(coef[0]) <= 6.0 + 1e-4 and abs(coef[1]) <= 3.0 + 1e-4
        curves.append(coef)
    assert np.ptp(np.array(curves)[:, 0]) > 0.1, "each crop gets its own curve"
    with pytest.raises(ValueError, match=r"eq_db must be in \[0, 24\] dB"):
        TrainConfig(synth_root="", eq_db=-1.0)


def test_vtlp_moves_each_crops_formants_by_one_factor(feats, speech_16k):
    """The warped log-mel of real speech is close to that of the same speech played faster (formants x 1.15),
    much closer than the unwarped one; prosodic features are untouched; alpha 1 changes nothing."""
    import soxr

    from export.data.vtlp import warp_log_mel

    mel = torch.from_numpy(fx.extract(speech_16k)[:, : fx.N_MELS]).float()  # (K, 80) real speech
    fast = soxr.resample(speech_16k, 16000 * 1.15, 16000).astype(np.float32)  # every frequency x 1.15
    target = torch.from_numpy(fx.extract(fast)[:, : fx.N_MELS]).float()
    spec, spec_fast = mel.mean(0), target.mean(0)  # long-term spectra: the timing change drops out
    warped = warp_log_mel(spec[None], torch.tensor([1.15]))[0]
    band = slice(5, 60)  # 200 Hz to about 4 kHz, where the formants are
    err_warped = (warped - spec_fast)[band].abs().mean()
    err_plain = (spec - spec_fast)[band].abs().mean()
    print(f"log-mel error against the faster speech: warped {float(err_warped):.3f}, plain {float(err_plain):.3f}")
    assert err_warped < 0.5 * err_plain, (float(err_warped), float(err_plain))
    assert torch.allclose(warp_log_mel(mel[None], torch.tensor([1.0]))[0], mel, atol=1e-4)
    out = _run(feats, vtlp=0.12)
    assert torch.equal(out[..., fx.N_MELS:], feats[..., fx.N_MELS:]), "the prosodic features are untouched"
    assert not torch.equal(out[..., : fx.N_MELS], feats[..., : fx.N_MELS])
    with pytest.raises(ValueError, match=r"vtlp must be in \[0, 0.3\], got 0.5"):
        TrainConfig(synth_root="", vtlp=0.5)
    with pytest.raises(ValueError, match="expected 80 mel bands"):
        warp_log_mel(mel[:, :40][None], torch.tensor([1.1]))
