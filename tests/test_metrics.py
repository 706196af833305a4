"""Landmark metrics on constructed cases with known answers, built around a real face from the pack."""

from __future__ import annotations

import numpy as np
import pytest

from engine.face import INNER_LIP_LOWER, MOUTH, apply_similarity, interocular, mean_shape
from export import metrics

FPS = 30


@pytest.fixture(scope="module")
def face(pack_clip) -> np.ndarray:
    """A real canonical face (68, 2): the Procrustes mean of one pack clip's first 50 frames."""
    frames = np.load(pack_clip["landmarks"])[:50].astype(np.float64)
    return mean_shape(frames)


def _track(face: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(face[None], n, axis=0).copy()


def test_constant_offset_gives_offset_over_interocular(face):
    true = _track(face, 20)
    d_px = 3.0
    pred = true + np.array([d_px * 0.6, d_px * 0.8])  # |offset| = d_px
    iod = float(interocular(face))
    assert metrics.landmark_distance(pred, true) == pytest.approx(d_px / iod, rel=1e-9)
    assert metrics.landmark_distance(pred, true, MOUTH) == pytest.approx(d_px / iod, rel=1e-9)
    # the same motion with a constant offset has zero velocity error
    assert metrics.landmark_velocity_distance(pred, true) == pytest.approx(0.0, abs=1e-12)


def test_lvd_is_along_time_not_landmarks(face):
    """Identical motion plus an offset: LVD 0. A still prediction of a moving mouth: LVD = speed / IOD."""
    n, v_px = 30, 0.5
    rng = np.random.default_rng(0)
    true = _track(face, n)
    true[:, MOUTH, 1] += v_px * np.arange(n)[:, None]  # mouth slides down v px per frame
    true[:, MOUTH] += rng.normal(0, 0.01, size=(1, len(MOUTH), 2))  # fixed shape change, not motion
    pred = true + rng.normal(0, 2.0, size=(1, 68, 2))  # per-point constant offsets
    assert metrics.landmark_velocity_distance(pred, true) == pytest.approx(0.0, abs=1e-12)
    assert metrics.landmark_velocity_distance(pred, true, MOUTH) == pytest.approx(0.0, abs=1e-12)
    still = _track(face, n)
    iod = float(interocular(face))
    assert metrics.landmark_velocity_distance(still, true, MOUTH) == pytest.approx(v_px / iod, rel=1e-9)
    whole = v_px * len(MOUTH) / 68 / iod
    assert metrics.landmark_velocity_distance(still, true) == pytest.approx(whole, rel=1e-9)


def test_per_frame_mean_is_not_a_batch_norm(face):
    """Error in one frame of four: LD is a quarter of that frame's error; the paper's batch norm is not."""
    true = _track(face, 4)
    pred = true.copy()
    pred[0] += np.array([3.0, 4.0])  # 5 px in frame 0 only
    iod = float(interocular(face))
    ld = metrics.landmark_distance(pred, true)
    assert ld == pytest.approx(5.0 / iod / 4, rel=1e-9)
    batch_norm_ld = np.linalg.norm(pred - true) / iod / len(true)  # one norm over the whole batch
    assert abs(batch_norm_ld - ld) > 0.5 * ld


def test_nan_frames_are_skipped(face):
    true = _track(face, 10)
    pred = true + 2.0
    true[3] = np.nan
    iod = float(interocular(face))
    assert metrics.landmark_distance(pred, true) == pytest.approx(np.hypot(2, 2) / iod, rel=1e-9)


def _lip_track(face: np.ndarray, gap_px: np.ndarray) -> np.ndarray:
    track = _track(face, len(gap_px))
    track[:, INNER_LIP_LOWER, 1] += gap_px[:, None]
    return track


@pytest.mark.parametrize("shift", [-3, 0, 2, 5])
def test_time_shift_of_sinusoidal_lip_gap_gives_its_lag(face, shift):
    n = 150
    t = np.arange(n + 20)
    gap = 4.0 + 3.0 * np.sin(2 * np.pi * t / 27.0) + 1.5 * np.sin(2 * np.pi * t / 11.0)
    true_gap = gap[10:10 + n]
    pred_gap = gap[10 - shift:10 - shift + n]  # pred[t] = true[t - shift]: late by `shift` frames
    res = metrics.clip_metrics(_lip_track(face, pred_gap), _lip_track(face, true_gap), FPS, face)
    assert res["lip_gap_lag_ms"] == pytest.approx(shift * 1000 / FPS)
    assert res["lip_gap_corr_peak"] == pytest.approx(1.0, abs=1e-9)
    if shift == 0:
        assert res["lip_gap_corr"] == pytest.approx(1.0, abs=1e-9)
    else:
        assert res["lip_gap_corr"] < 0.95


def test_head_pose_is_removed_before_scoring(face):
    """A prediction that only turns, scales and moves the head scores zero; a mouth offset scores d/IOD."""
    n = 12
    true = _track(face, n)
    true[:, INNER_LIP_LOWER, 1] += np.linspace(0, 5, n)[:, None]
    pose = np.array([np.log(1.1), 0.15, 7.0, -4.0])
    pred = apply_similarity(true, pose)
    res = metrics.clip_metrics(pred, true, FPS, face)
    assert res["ld"] == pytest.approx(0.0, abs=1e-9)
    assert res["mouth_lvd"] == pytest.approx(0.0, abs=1e-9)
    shifted = true.copy()
    shifted[:, MOUTH, 1] += 2.0  # mouth points are not used for the pose fit
    res = metrics.clip_metrics(shifted, true, FPS, face)
    assert res["mouth_ld"] == pytest.approx(2.0 / float(interocular(face)), rel=1e-6)


def test_still_face_has_no_lip_gap_correlation(face):
    gap = np.sin(np.arange(60) / 3.0)
    res = metrics.clip_metrics(_track(face, 60), _lip_track(face, gap), FPS, face)
    assert np.isnan(res["lip_gap_corr"]) and np.isnan(res["lip_gap_lag_ms"])


def test_aggregate_is_a_mean_over_clips(face):
    a = {"ld": 1.0, "mouth_ld": 2.0, "lvd": 0.1, "mouth_lvd": 0.2, "frames": 100,
         "lip_gap_curve": [0.1, 0.5, 0.2]}
    b = {"ld": 3.0, "mouth_ld": 4.0, "lvd": 0.3, "mouth_lvd": 0.4, "frames": 10,
         "lip_gap_curve": [0.3, 0.1, 0.0]}
    out = metrics.aggregate([a, b], fps=10.0)
    assert out["ld"] == pytest.approx(2.0) and out["mouth_lvd"] == pytest.approx(0.3)
    assert out["lip_gap_corr"] == pytest.approx(0.3)  # mean curve [0.2, 0.3, 0.1] at lag 0
    assert out["lip_gap_lag_ms"] == pytest.approx(0.0)
    assert out["n_clips"] == 2 and out["frames"] == 110


def test_bad_shapes_are_refused(face):
    with pytest.raises(ValueError, match="same shape"):
        metrics.landmark_distance(_track(face, 3), _track(face, 4))
    with pytest.raises(ValueError, match=r"\(T, P, 2\)"):
        metrics.landmark_distance(face, face)


def test_paired_ratio_on_known_clips():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([2.0, 2.0, 4.0, 2.0])
    out = metrics.paired_ratio(a, b, n_boot=500)
    assert out["ratio"] == pytest.approx(10 / 10) and out["clips_better"] == pytest.approx(0.5)
    assert out["ci95"][0] <= out["ratio"] <= out["ci95"][1]
    strictly = metrics.paired_ratio(0.5 * b, b, n_boot=200)
    assert strictly["ci95"] == pytest.approx([0.5, 0.5]) and strictly["clips_better"] == 1.0
    with pytest.raises(ValueError, match="one length"):
        metrics.paired_ratio(a, b[:3])
