"""Training targets through a centred moving average (export/data/smooth.py) on a real pack face."""

from __future__ import annotations

import numpy as np
import pytest

from engine.face import INNER_LIP_LOWER, INNER_LIP_UPPER, MOUTH, inner_lip_gap, interocular
from export.articulation import CLOSED_GAP_PCT
from export.data.smooth import check_frames, kept_closures, smoothed_targets


@pytest.fixture(scope="module")
def real_segment(pack_val_segments):
    return max(pack_val_segments, key=lambda s: len(s.canonical))


def _jitter(track: np.ndarray) -> float:
    """Mean size of the second difference along time: frame-to-frame wobble, not slow motion."""
    return float(np.abs(np.diff(track.astype(np.float64), n=2, axis=0)).mean())


def test_smoothing_takes_out_jitter_and_keeps_the_sound_and_the_slow_motion(real_segment):
    seg = real_segment
    calm = smoothed_targets(seg, 3)
    assert calm.audio is seg.audio and calm.clip_id == seg.clip_id, "the features (cached by sound) stay valid"
    assert np.array_equal(calm.identity, seg.identity)
    assert calm.canonical.shape == seg.canonical.shape and calm.canonical.dtype == np.float32
    assert calm.head.shape == seg.head.shape and calm.head.dtype == np.float32
    mouth_raw, mouth_calm = seg.canonical[:, MOUTH], calm.canonical[:, MOUTH]
    assert _jitter(mouth_calm) < 0.6 * _jitter(mouth_raw), "a 3-frame mean must cut the mouth's wobble"
    assert _jitter(calm.head) < 0.6 * _jitter(seg.head)
    # the speech-rate opening and closing of the lips survives: the gap traces still correlate closely
    gap_raw, gap_calm = inner_lip_gap(seg.canonical), inner_lip_gap(calm.canonical)
    assert np.corrcoef(gap_raw, gap_calm)[0, 1] > 0.9
    # centred, so nothing moves in time: the best lag between the traces is 0
    lags = range(-3, 4)
    r = [np.corrcoef(np.roll(gap_calm, k)[3:-3], gap_raw[3:-3])[0, 1] for k in lags]
    assert list(lags)[int(np.argmax(r))] == 0
    # each interior frame is the mean of itself and its two neighbours
    i = len(seg.canonical) // 2
    want = seg.canonical[i - 1:i + 2].astype(np.float64).mean(axis=0)
    assert calm.canonical[i] == pytest.approx(want, abs=1e-4)


def test_one_frame_is_off_and_bad_windows_are_refused(real_segment):
    assert smoothed_targets(real_segment, 1) is real_segment
    for bad in (0, 2, -3, 2.0, True, "3"):
        with pytest.raises(ValueError, match="odd whole number of frames"):
            check_frames(bad)


def test_train_config_checks_the_window():
    from export.train import TrainConfig

    assert TrainConfig(target_smooth_frames=5).target_smooth_frames == 5
    with pytest.raises(ValueError, match="got 4"):
        TrainConfig(target_smooth_frames=4)


def test_a_checkpoint_saved_before_an_option_existed_still_resumes():
    from export.train import TrainConfig, config_id, stored_config_id

    cfg = TrainConfig(lr=7e-4, steps=600)
    old = cfg.to_dict()
    for added_later in ("target_smooth_frames", "target_keep_closures", "eq_db", "mirror", "speed_perturb"):
        del old[added_later]  # as a checkpoint from before these options stored its config
    assert stored_config_id(old) == config_id(cfg), "the same settings, with the new options off"
    assert stored_config_id(cfg.to_dict()) == config_id(cfg)
    assert stored_config_id({**old, "lr": 1e-3}) != config_id(cfg), "a changed setting is still told apart"
    assert config_id(TrainConfig(lr=7e-4, steps=600, target_smooth_frames=5)) != config_id(cfg)


def _gap_pct(track: np.ndarray, eyes_from: np.ndarray) -> np.ndarray:
    return 100.0 * inner_lip_gap(track.astype(np.float64)) / interocular(eyes_from.astype(np.float64))


def _pair_gaps(track: np.ndarray) -> np.ndarray:
    return track[:, INNER_LIP_LOWER, 1].astype(np.float64) - track[:, INNER_LIP_UPPER, 1]


def test_keeping_closures_shuts_again_the_lips_the_mean_opened_and_touches_nothing_else(real_segment):
    seg = real_segment
    raw = seg.canonical.astype(np.float64)
    shut = _gap_pct(raw, raw) <= CLOSED_GAP_PCT
    assert 5 <= shut.sum() < len(raw), "the face must shut its lips now and then for this test to mean anything"
    plain = smoothed_targets(seg, 5)
    kept = smoothed_targets(seg, 5, keep_closures=True)
    opened = shut & (_gap_pct(plain.canonical, raw) > CLOSED_GAP_PCT)
    assert opened.any(), "a 5-frame mean opens some of this face's closures (what the option is for)"
    gap_kept = _gap_pct(kept.canonical, raw)
    assert np.all(gap_kept[shut] <= CLOSED_GAP_PCT + 1e-3), "every frame shut in the track stays shut"
    # in shut frames each pair's gap is the narrower of the mean's and the track's
    want = np.minimum(_pair_gaps(plain.canonical), _pair_gaps(raw))[shut]
    np.testing.assert_allclose(_pair_gaps(kept.canonical)[shut], want, atol=1e-4)
    # open frames, the x of every point, and all points but the inner lips are the mean's, untouched
    np.testing.assert_array_equal(kept.canonical[~shut], plain.canonical[~shut])
    np.testing.assert_array_equal(kept.canonical[..., 0], plain.canonical[..., 0])
    others = np.setdiff1d(np.arange(68), np.r_[INNER_LIP_UPPER, INNER_LIP_LOWER])
    np.testing.assert_array_equal(kept.canonical[:, others], plain.canonical[:, others])
    # both lips move the same distance: each pair's midpoint stays where the mean put it
    mid = lambda t: (t[:, INNER_LIP_LOWER, 1] + t[:, INNER_LIP_UPPER, 1]) / 2.0
    np.testing.assert_allclose(mid(kept.canonical), mid(plain.canonical), atol=1e-4)
    np.testing.assert_array_equal(kept.head, plain.head)


def test_keeping_closures_refuses_mismatched_tracks_and_needs_smoothing(real_segment):
    raw = real_segment.canonical
    with pytest.raises(ValueError, match=r"must both be \(T, 68, 2\)"):
        kept_closures(raw, raw[1:])
    from export.train import TrainConfig

    assert TrainConfig(target_smooth_frames=5, target_keep_closures=True).target_keep_closures
    with pytest.raises(ValueError, match="needs target_smooth_frames > 1"):
        TrainConfig(target_keep_closures=True)
