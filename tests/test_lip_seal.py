"""The lip seal: a dead zone on the inner-lip gap (engine.face.seal_lips), carried by the model's metadata."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from engine.face import (
    INNER_LIP_LOWER,
    INNER_LIP_UPPER,
    apply_similarity,
    inner_lip_gap,
    interocular,
    seal_lips,
)
from engine.session import ModelSession, default_model_path


@pytest.fixture(scope="module")
def face():
    return ModelSession(None, "cpu").meta.mean_face.astype(np.float32)  # a real neutral face


def with_gap(face: np.ndarray, gap_pct: float) -> np.ndarray:
    """The face with every inner-lip pair opened to gap_pct % of the eye distance (upper lip fixed)."""
    f = face.copy()
    f[INNER_LIP_LOWER, 1] = f[INNER_LIP_UPPER, 1] + gap_pct / 100.0 * interocular(face)
    return f


def gap_pct(points: np.ndarray) -> np.ndarray:
    return 100.0 * inner_lip_gap(points) / interocular(points)


@pytest.mark.parametrize(("before", "after"), [(0.4, 0.0), (0.99, 0.0), (1.0, 0.0), (3.0, 2.0), (12.0, 11.0),
                                                (-0.5, -0.5)])
def test_dead_zone_shuts_near_closed_lips_and_narrows_open_ones(face, before, after):
    out = seal_lips(with_gap(face, before), 1.0)
    assert gap_pct(out) == pytest.approx(after, abs=1e-3)
    moved = np.flatnonzero(np.abs(out - with_gap(face, before)).sum(-1) > 1e-6)
    assert set(moved) <= set(INNER_LIP_UPPER) | set(INNER_LIP_LOWER)  # no other point moves
    if before > 0:  # the upper and lower lip meet half way
        up = out[INNER_LIP_UPPER, 1] - with_gap(face, before)[INNER_LIP_UPPER, 1]
        lo = with_gap(face, before)[INNER_LIP_LOWER, 1] - out[INNER_LIP_LOWER, 1]
        np.testing.assert_allclose(up, lo, atol=1e-4)


def test_head_roll_and_scale_do_not_change_the_seal(face):
    frames = np.stack([with_gap(face, g) for g in (0.5, 2.0, 8.0)])
    pose = np.array([np.log(0.7), 0.35, 12.0, -9.0])  # smaller, rolled 20 degrees, moved
    sealed_then_moved = apply_similarity(seal_lips(frames, 1.5).astype(np.float64), pose)
    moved_then_sealed = seal_lips(apply_similarity(frames.astype(np.float64), pose), 1.5)
    np.testing.assert_allclose(moved_then_sealed, sealed_then_moved, atol=1e-3)


def test_zero_dead_zone_is_the_identity_and_input_is_not_changed(face):
    f = with_gap(face, 0.5)
    keep = f.copy()
    np.testing.assert_array_equal(seal_lips(f, 0.0), f)
    seal_lips(f, 2.0)
    np.testing.assert_array_equal(f, keep)
    assert seal_lips(np.zeros((0, 68, 2)), 1.0).shape == (0, 68, 2)


def test_shipped_model_carries_its_seal_and_run_applies_it():
    from engine.batcher import silence_batch

    shipped = ModelSession(None, "cpu")
    assert shipped.meta.lip_seal_pct == 1.0 and shipped.lip_seal_pct == 1.0
    off = ModelSession(None, "cpu", lip_seal_pct=0)
    feats, ident, state, emo = silence_batch(shipped, 2)
    feats = feats + np.random.default_rng(0).normal(size=feats.shape).astype(np.float32)
    raw, st_raw = shipped.run_raw(feats, ident, state, emo)
    sealed, st = shipped.run(feats, ident, state, emo)
    np.testing.assert_array_equal(st, st_raw)  # the recurrent state is the network's own
    np.testing.assert_allclose(sealed, seal_lips(raw, 1.0), atol=1e-6)
    np.testing.assert_array_equal(off.run(feats, ident, state, emo)[0], raw)
    assert not np.allclose(sealed, raw)


def test_bad_seal_values_are_refused(tmp_path):
    from engine.config import EngineConfig

    with pytest.raises(ValueError, match="lip_seal_pct"):
        ModelSession(None, "cpu", lip_seal_pct=7.5)
    with pytest.raises(ValueError, match="lip_seal_pct"):
        EngineConfig(lip_seal_pct=-1)
    proto = onnx.load(str(default_model_path()))
    for entry in proto.metadata_props:
        if entry.key == "lip_seal_pct":
            entry.value = "wide"
    path = tmp_path / "bad_seal.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match="metadata lip_seal_pct must be a number"):
        ModelSession(path, "cpu")


def test_infer_lip_seal_flag_changes_only_the_inner_lips(speech_wav, tmp_path):
    from engine.cli import main

    for name, extra in (("default", []), ("off", ["--lip-seal-pct", "0"]), ("wide", ["--lip-seal-pct", "3"])):
        assert main(["infer", str(speech_wav), "--out", str(tmp_path / name), *extra]) == 0
    lm = {n: np.load(tmp_path / n / f"{speech_wav.stem}.npz")["landmarks"] for n in ("default", "off", "wide")}
    inner = np.r_[INNER_LIP_UPPER, INNER_LIP_LOWER]
    others = np.setdiff1d(np.arange(68), inner)
    for n in ("default", "wide"):
        np.testing.assert_allclose(lm[n][:, others], lm["off"][:, others], atol=1e-4)
    g = {n: gap_pct(v) for n, v in lm.items()}
    assert (g["default"] <= g["off"] + 1e-3).all() and (g["wide"] <= g["default"] + 1e-3).all()
    assert (g["default"] < 0.01).mean() > (g["off"] < 0.01).mean()  # more frames shut


def test_the_seal_views_are_the_inner_lip_pairs():
    from engine.face import _LOWER_LIP, _UPPER_LIP

    idx = np.arange(68)
    np.testing.assert_array_equal(idx[_UPPER_LIP], INNER_LIP_UPPER)
    np.testing.assert_array_equal(idx[_LOWER_LIP][::-1], INNER_LIP_LOWER)
