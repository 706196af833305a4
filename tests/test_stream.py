"""The streaming core: any chunking gives the offline frames, which equal one ORT call over the whole clip."""

from __future__ import annotations

import numpy as np
import pytest

from engine import features, timing
from engine.batcher import Batcher
from engine.config import EngineConfig
from engine.controls import CONTROL_NAMES, controls_from_landmarks
from engine.smoothing import OneEuroFilter
from engine.stream import Stream, interpolation_delay_ms

# Landmarks are float32 in a 256 px frame: one ulp there is 1.5e-5 to 3e-5 px. A model step run
# alone (T=1) and the same step inside a T-frame call differ by a few ulps in ONNX Runtime's GRU.
STEPWISE_TOL_PX = 2e-4
ONE_CALL_TOL_PX = 1e-5


@pytest.fixture(scope="module")
def session():
    from engine.session import ModelSession, default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"no model at {default_model_path()} (engineer H4 ships it)")
    return ModelSession(providers="cpu")


def _offline(session, audio, sr=16000, fmt="f32", **kw):
    s = Stream(EngineConfig(**kw), session.meta, sample_rate_hz=sr, sample_format=fmt)
    frames = s.process(session, audio, final=True)
    return s, frames


def _chunked(session, audio, seed, sr=16000, fmt="f32", max_chunk=2500, **kw):
    rng = np.random.default_rng(seed)
    s = Stream(EngineConfig(**kw), session.meta, sample_rate_hz=sr, sample_format=fmt)
    frames, i = [], 0
    while i < len(audio):
        n = int(rng.integers(1, max_chunk))
        frames += s.process(session, audio[i:i + n])
        i += n
    frames += s.process(session, None, final=True)
    return s, frames


def test_offline_equals_one_ort_call_over_gather_windows(session, speech_16k):
    meta = session.meta
    s, frames = _offline(session, speech_16k)
    T = timing.n_frames(len(speech_16k), 30)
    assert len(frames) == T == s.total_frames
    assert [f.index for f in frames] == list(range(T))
    need = timing.samples_needed(T - 1, 30, meta.lookahead_ms)
    padded = np.concatenate([speech_16k, np.zeros(max(0, need - len(speech_16k)), np.float32)])
    windows = timing.gather_windows(features.extract(padded), features.SILENCE, T, 30, meta.lookahead_ms,
                                    meta.window_hops)
    ref, _ = session.run(windows[None], meta.mean_face[None].astype(np.float32), session.initial_state(1))
    got = np.stack([f.landmarks for f in frames])
    assert got.dtype == np.float32 and got.shape == (T, 68, 2)
    np.testing.assert_allclose(got, ref[0], atol=ONE_CALL_TOL_PX, rtol=0)
    assert np.abs(np.diff(got, axis=0)).max() > 1e-3, "the landmarks must move with the speech"


@pytest.mark.parametrize("seed", [0, 1])
def test_random_chunks_give_the_offline_frames(session, speech_16k, seed):
    _, ref = _offline(session, speech_16k)
    _s, got = _chunked(session, speech_16k, seed)
    assert [f.index for f in got] == [f.index for f in ref]
    assert [f.audio_time_s for f in got] == [f.index / 30 for f in ref]
    np.testing.assert_allclose(np.stack([f.landmarks for f in got]), np.stack([f.landmarks for f in ref]),
                               atol=STEPWISE_TOL_PX, rtol=0)


def test_resampled_pcm16_chunks_give_the_offline_frames(session, speech_wav):
    import soundfile as sf

    pcm, sr = sf.read(speech_wav, dtype="int16")
    assert sr != 16000
    _, ref = _offline(session, pcm, sr=sr, fmt="pcm16")
    _, got = _chunked(session, pcm, 3, sr=sr, fmt="pcm16")
    assert len(got) == len(ref) == timing.n_frames(round(len(pcm) * 16000 / sr), 30)
    np.testing.assert_allclose(np.stack([f.landmarks for f in got]), np.stack([f.landmarks for f in ref]),
                               atol=STEPWISE_TOL_PX, rtol=0)


def test_queued_windows_survive_the_hop_store_moving(session, speech_16k):
    """Steps queued but not yet run keep their exact input windows while later audio fills the hop store
    many times over (it moves its live hops to a new array when full) and drops hops no window needs."""
    from engine.stream import HOP_STORE_SPARE

    meta = session.meta
    s = Stream(EngineConfig(), meta)
    rng = np.random.default_rng(7)
    i = 0
    while i < len(speech_16k):  # odd chunk sizes, one hop up to several stores' worth; nothing is run
        n = int(rng.choice([37, 160, 333, 2 * HOP_STORE_SPARE * 160 + 11]))
        s.push(speech_16k[i:i + n])
        i += n
    s.finish()
    T = s.total_frames
    assert T == timing.n_frames(len(speech_16k), 30) and s.n_hops > 4 * HOP_STORE_SPARE
    got = s.pending_feats()
    need = timing.samples_needed(T - 1, 30, meta.lookahead_ms)
    padded = np.concatenate([speech_16k, np.zeros(max(0, need - len(speech_16k)), np.float32)])
    want = timing.gather_windows(features.extract(padded), features.SILENCE, T, 30, meta.lookahead_ms,
                                 meta.window_hops)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_live_frames_never_wait_for_more_than_their_audio(session, speech_16k):
    """Frame i comes out as soon as samples_needed(i) samples are in, never earlier, never later."""
    meta = session.meta
    s = Stream(EngineConfig(), meta)
    step = 160
    for i in range(0, 16000, step):
        frames = s.process(session, speech_16k[i:i + step])
        have = i + step
        ready = [k for k in range(60) if timing.samples_needed(k, 30, meta.lookahead_ms) <= have]
        assert s.next_frame == (max(ready) + 1 if ready else 0)
        assert all(f.chunk == -1 for f in frames)


@pytest.mark.parametrize("fps", [25, 60])
def test_other_frame_rates_interpolate_model_frames(session, speech_16k, fps):
    _, base = _offline(session, speech_16k)
    _, ref = _offline(session, speech_16k, fps=fps)
    _, got = _chunked(session, speech_16k, 5, fps=fps)
    assert len(ref) == len(got) == timing.n_frames(len(speech_16k), fps)
    np.testing.assert_allclose(np.stack([f.landmarks for f in got]), np.stack([f.landmarks for f in ref]),
                               atol=STEPWISE_TOL_PX, rtol=0)
    # frames that fall on a model frame are that model frame; others lie between their neighbours
    for f in ref:
        j, rem = divmod(f.index * 30, fps)
        a = base[j].landmarks
        if rem == 0:
            np.testing.assert_array_equal(f.landmarks, a)
        elif j + 1 < len(base):
            b, w = base[j + 1].landmarks, rem / fps
            np.testing.assert_allclose(f.landmarks, (1 - w) * a + w * b, atol=1e-4)
    assert interpolation_delay_ms(60, 30) == pytest.approx(1000 / 60)
    assert interpolation_delay_ms(25, 30) == pytest.approx(80 / 3)
    assert interpolation_delay_ms(30, 30) == 0


def test_batched_streams_equal_streams_run_alone(session, speech_16k):
    """Stacked rows in one ORT call (the batcher) give each stream its own frames."""
    cfg = EngineConfig()
    rng = np.random.default_rng(7)
    clips = [speech_16k, speech_16k[4000:] * 0.5, rng.standard_normal(30000).astype(np.float32) * 0.01]
    ident = session.meta.mean_face + rng.normal(0, 2, (68, 2)).astype(np.float32)
    alone = [_offline(session, c)[1] for c in clips[:2]]
    s = Stream(cfg, session.meta, identity=ident)
    alone.append(s.process(session, clips[2], final=True))
    streams = [Stream(cfg, session.meta), Stream(cfg, session.meta), Stream(cfg, session.meta, identity=ident)]
    got = [[], [], []]
    batcher = Batcher(session, cfg)
    for k, st in enumerate(streams):
        batcher.add(st, got[k].extend, lambda exc: pytest.fail(str(exc)))
    pos = [0, 0, 0]
    while any(p < len(c) for p, c in zip(pos, clips)):
        for k, (st, c) in enumerate(zip(streams, clips)):
            if pos[k] < len(c):
                n = int(rng.integers(200, 1200))
                st.push(c[pos[k]:pos[k] + n])
                pos[k] += n
                if pos[k] >= len(c):
                    st.finish()
                batcher.notify(st)
        batcher.run_ready()
    assert batcher.calls < sum(len(a) for a in alone), "steps of different streams must share calls"
    for a, g in zip(alone, got):
        assert [f.index for f in g] == [f.index for f in a]
        np.testing.assert_allclose(np.stack([f.landmarks for f in g]), np.stack([f.landmarks for f in a]),
                                   atol=STEPWISE_TOL_PX, rtol=0)


def test_bad_stream_settings_are_value_errors(session):
    with pytest.raises(ValueError, match=r"identity must be finite \(68, 2\)"):
        Stream(EngineConfig(), session.meta, identity=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="fps must be one of"):
        Stream(EngineConfig(), session.meta, fps=24)
    with pytest.raises(ValueError, match="sample_rate_hz"):
        Stream(EngineConfig(), session.meta, sample_rate_hz=4000)
    s = Stream(EngineConfig(), session.meta)
    s.finish()
    with pytest.raises(ValueError, match="already called"):
        s.finish()


def test_one_euro_adds_no_delay_and_smooths_jitter():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(30, min_cutoff_hz=1.0, beta=0.0)
    still = 100 + rng.normal(0, 1.0, (90, 68, 2)).astype(np.float32)
    out = f.filter_track(still)
    assert out.shape == still.shape  # one output per input, at once: no frame is held back
    assert out[30:].std() < 0.5 * still[30:].std()
    g = OneEuroFilter(30, min_cutoff_hz=1.0, beta=1.0)  # speed raises the cutoff: a jump passes fast
    step = np.concatenate([np.zeros((10, 2)), np.full((10, 2), 50.0)]).astype(np.float32)
    y = g.filter_track(step)
    assert y[12, 0] > 40.0
    np.testing.assert_array_equal(OneEuroFilter(30).filter_track(np.full((5, 3), 7.0)), np.full((5, 3), 7.0))


def test_controls_follow_the_face_geometry(session):
    neutral = session.meta.mean_face.astype(np.float64)
    zero = controls_from_landmarks(neutral, neutral)
    assert zero.shape == (len(CONTROL_NAMES),) and np.abs(zero).max() < 1e-5
    iod = float(np.linalg.norm(neutral[36] - neutral[45]))
    open_jaw = neutral.copy()
    open_jaw[[5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59, 65, 66, 67]] += [0, 0.3 * iod]
    c = dict(zip(CONTROL_NAMES, controls_from_landmarks(open_jaw, neutral)))
    assert c["jawOpen"] == 1.0 and c["mouthClose"] == 0.0 and c["eyeBlinkLeft"] == 0.0
    blink = neutral.copy()
    blink[[43, 44]] = blink[[47, 46]]  # subject's left eye: upper lid onto the lower lid
    c = dict(zip(CONTROL_NAMES, controls_from_landmarks(blink, neutral)))
    assert c["eyeBlinkLeft"] == pytest.approx(1.0) and c["eyeBlinkRight"] == 0.0
    # a rotated, scaled, shifted copy of the open jaw gives the same controls (head pose removed)
    th = 0.2
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) * 1.3
    moved = open_jaw @ rot.T + [12.0, -7.0]
    np.testing.assert_allclose(controls_from_landmarks(moved, neutral), controls_from_landmarks(open_jaw, neutral),
                               atol=1e-5)


def test_stream_frames_carry_controls_when_asked(session, speech_16k):
    _, frames = _offline(session, speech_16k[:16000], controls=True, smoothing=True)
    ctl = np.stack([f.controls for f in frames])
    assert ctl.shape == (len(frames), len(CONTROL_NAMES)) and ctl.dtype == np.float32
    assert ((ctl >= 0) & (ctl <= 1)).all()
