"""Audio-video sync repair of training segments: the lag's sign, when it is trusted, and the shift itself."""

import numpy as np
import pytest

from engine.config import SAMPLE_RATE_HZ
from engine.timing import n_frames
from export.data.pack import Segment
from export.data.sync import MIN_GAIN_R, choose_lag, lag_curve, shift_segment


def _segment(seconds: float = 4.0, fps: int = 30) -> Segment:
    rng = np.random.default_rng(0)
    audio = rng.normal(size=int(seconds * SAMPLE_RATE_HZ)).astype(np.float32)
    t = n_frames(len(audio), fps)
    canonical = np.zeros((t, 68, 2), np.float32)
    canonical[:, :, 0] = np.arange(t)[:, None]  # x of every point = the frame number, to follow frames
    return Segment("c1", "train", "test", None, fps, audio, canonical, np.zeros((t, 4), np.float32),
                   canonical.mean(0))


def test_lag_sign_and_shift_line_the_lips_up():
    rng = np.random.default_rng(1)
    pred = np.convolve(rng.normal(size=400), np.ones(5) / 5, "same")  # a smooth random lip-gap track
    late = np.concatenate([np.zeros(2), pred[:-2]])  # the tracked lips arrive 2 frames after the sound
    rs = lag_curve(pred, late, 5)
    assert choose_lag(rs, 5) == 2
    seg = _segment()
    moved = shift_segment(seg, 2)
    assert moved.canonical[0, 0, 0] == 2  # truth frame 2 now sits at audio time 0
    assert np.array_equal(moved.audio, seg.audio[: len(moved.audio)])
    early = shift_segment(seg, -3)
    cut = round(3 * SAMPLE_RATE_HZ / 30)
    assert early.canonical[0, 0, 0] == 0 and np.array_equal(early.audio, seg.audio[cut: cut + len(early.audio)])
    for s in (moved, early):  # the Segment contract still holds: one frame per 1/fps of sound
        assert len(s.canonical) == n_frames(len(s.audio), s.fps) == len(s.head)
    assert shift_segment(seg, 0) is seg


def test_weak_evidence_keeps_the_clip_as_it_is():
    rs = np.full(11, 0.2)
    rs[7] = 0.2 + MIN_GAIN_R / 2  # a lag that is barely better than 0
    assert choose_lag(rs, 5) == 0
    assert choose_lag(np.full(11, np.nan), 5) == 0
    with pytest.raises(ValueError, match="same length"):
        lag_curve(np.zeros(10), np.zeros(9), 2)
