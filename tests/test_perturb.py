"""Speed perturbation of training segments: sound and face stay together, and bad factors are refused."""

import argparse

import numpy as np
import pytest

from engine.config import SAMPLE_RATE_HZ
from engine.timing import n_frames
from export.data.pack import Segment
from export.data.perturb import speed_perturbed

FPS = 30


def _tone_segment(seconds: float = 3.0) -> Segment:
    """Audio with one 1 kHz burst at 1.5 s; the face's frame number in every x (to follow time)."""
    n = int(seconds * SAMPLE_RATE_HZ)
    audio = np.zeros(n, np.float32)
    burst = slice(int(1.5 * SAMPLE_RATE_HZ), int(1.6 * SAMPLE_RATE_HZ))
    audio[burst] = np.sin(2 * np.pi * 1000 * np.arange(burst.stop - burst.start) / SAMPLE_RATE_HZ)
    t = n_frames(n, FPS)
    canonical = np.zeros((t, 68, 2), np.float32)
    canonical[:, :, 0] = np.arange(t)[:, None]
    head = np.zeros((t, 4), np.float32)
    head[:, 1] = np.linspace(3.0, 3.3, t)  # crosses +pi: wraps to about -2.98 after it
    head[:, 1] = np.angle(np.exp(1j * head[:, 1]))
    return Segment("c1", "train", "test", None, FPS, audio, canonical, head, canonical.mean(0), start_s=2.0)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_audio_and_face_keep_their_moment(factor):
    seg = _tone_segment()
    fast = speed_perturbed(seg, factor)
    assert len(fast.audio) == pytest.approx(len(seg.audio) / factor, abs=2)
    assert len(fast.canonical) == n_frames(len(fast.audio), FPS) == len(fast.head)
    # the burst moves to 1.5 s / factor
    loud = np.flatnonzero(np.abs(fast.audio) > 0.5)
    assert loud[0] / SAMPLE_RATE_HZ == pytest.approx(1.5 / factor, abs=0.002)
    # ... and so does the face: new frame i shows original frame i * factor
    i = np.arange(len(fast.canonical) - 2)
    assert np.allclose(fast.canonical[i, 0, 0], np.minimum(i * factor, len(seg.canonical) - 1), atol=1e-4)
    # the head angle is interpolated across +-pi, not through 0, and stays wrapped like the source
    assert np.abs(np.diff(np.unwrap(fast.head[:, 1]))).max() < 0.01
    assert np.abs(fast.head[:, 1]).max() <= np.pi
    assert fast.identity is seg.identity and fast.clip_id == f"c1@speed{factor:g}"
    assert fast.start_s == pytest.approx(2.0 / factor)


@pytest.mark.parametrize("bad", [1.0, 0.5, 1.5, True, "1.1"])
def test_bad_factors_are_refused(bad):
    with pytest.raises(ValueError, match=r"a speed factor must be a number in \[0.8, 1.25\] other than 1"):
        speed_perturbed(_tone_segment(), bad)


def test_train_config_and_flag():
    from export.train import TrainConfig, add_arguments, load_config

    cfg = TrainConfig(speed_perturb=[0.9, 1.1])
    assert cfg.speed_perturb == (0.9, 1.1)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # JSON round trip (lists) gives the same config
    with pytest.raises(ValueError, match="speed_perturb must be a list of speed factors"):
        TrainConfig(speed_perturb="0.9")
    with pytest.raises(ValueError, match="other than 1"):
        TrainConfig(speed_perturb=(1.0,))
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--speed-perturb", "0.9,1.1"])
    assert load_config(None, {"speed_perturb": args.speed_perturb, "dims": {}}).speed_perturb == (0.9, 1.1)
    with pytest.raises(SystemExit):
        p.parse_args(["--speed-perturb", "fast"])
