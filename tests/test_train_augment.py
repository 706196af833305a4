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
