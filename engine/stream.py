"""One live landmark stream: PCM chunks of any size in, stamped landmark frames out (no I/O, no asyncio).

    s = Stream(cfg, session.meta, sample_rate_hz=48000, sample_format="f32")
    s.push(pcm, chunk=0, recv_time_s=time.time())   # features now; due model steps are queued
    feats = s.pending_feats()                      # (n, W, F): run alone or stacked with other streams
    frames = s.complete(landmarks, state_out)      # landmarks (n, 68, 2), state_out (S,)
    frames = s.process(session, pcm)               # all three at once (infer, tests)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from engine import features, timing
from engine.config import N_LANDMARKS, SAMPLE_RATE_HZ, SUPPORTED_FPS, EngineConfig


@dataclass
class Frame:
    """One output frame. Frame `index` shows audio time index / fps."""

    index: int
    audio_time_s: float
    landmarks: np.ndarray  # (68, 2) float32, canonical 256 px frame
    controls: np.ndarray | None = None  # (len(controls.CONTROL_NAMES),) float32 in [0, 1]
    chunk: int = -1  # sequence number of the pushed chunk whose audio completed this frame
    recv_time_s: float = 0.0  # wall-clock arrival of that chunk (Unix seconds)
    stages_ms: dict = field(default_factory=dict)  # features, wait, model (filled by the batcher)


@dataclass(slots=True)
class _Step:
    """A due model step: model frame j, its input window and the chunk that made it due."""

    j: int
    window: np.ndarray  # (W, F) float32
    chunk: int
    recv_time_s: float
    features_ms: float
    ready_t: float  # perf_counter when the step became due


def interpolation_delay_ms(fps: int, model_fps: int) -> float:
    """Longest wait beyond its own time for the next model frame an interpolated frame needs."""
    worst = Fraction(0)
    for k in range(fps):  # the pattern repeats every second
        t = Fraction(k, fps)
        j0 = (k * model_fps) // fps
        if t != Fraction(j0, model_fps):
            worst = max(worst, Fraction(j0 + 1, model_fps) - t)
    return float(worst * 1000)


HOP_STORE_SPARE = 64  # hops of room after the newest one (0.64 s), so most pushes allocate nothing


class Stream:
    """Per-stream state: resampler, feature extractor, hop store, recurrent state, frame counters."""

    def __init__(self, config: EngineConfig, meta, *, sample_rate_hz: int = SAMPLE_RATE_HZ, channels: int = 1,
                 sample_format: str = "f32", identity: np.ndarray | None = None,
                 emotion: np.ndarray | None = None, fps: int | None = None, smoothing: bool | None = None,
                 controls: bool | None = None) -> None:
        from engine.audio import AudioInput  # local: resampler import cost stays out of protocol users

        self.meta = meta
        self.fps = config.fps if fps is None else fps
        if self.fps not in SUPPORTED_FPS:
            raise ValueError(f"fps must be one of {SUPPORTED_FPS}, got {self.fps!r}")
        self.model_fps = round(meta.fps)
        if self.model_fps != meta.fps:
            raise ValueError(f"model fps must be a whole number, got {meta.fps}")
        self.lookahead_ms = float(meta.lookahead_ms)
        self._look_samples = timing.lookahead_samples(self.lookahead_ms)  # checked whole once, here
        self.window = int(meta.window_hops)
        self.latency_ms = self.lookahead_ms + interpolation_delay_ms(self.fps, self.model_fps)
        self.audio = AudioInput(sample_rate_hz, channels, sample_format)
        self.features = features.FeatureExtractor()
        ident = meta.mean_face if identity is None else identity
        self.identity = np.asarray(ident, np.float32)
        if self.identity.shape != (N_LANDMARKS, 2) or not np.isfinite(self.identity).all():
            raise ValueError(f"identity must be finite ({N_LANDMARKS}, 2), got shape {self.identity.shape}")
        self.emotion = np.zeros(meta.n_emotions, np.float32) if emotion is None else np.asarray(emotion, np.float32)
        if self.emotion.shape != (meta.n_emotions,):
            raise ValueError(f"emotion must have shape ({meta.n_emotions},), got {self.emotion.shape}")
        self.state = np.zeros(meta.state_size, np.float32)
        self.smoother = None
        if config.smoothing if smoothing is None else smoothing:
            from engine.smoothing import OneEuroFilter

            self.smoother = OneEuroFilter(self.fps, config.one_euro_min_cutoff_hz, config.one_euro_beta)
        self.with_controls = config.controls if controls is None else controls
        # hop store: rows [lo, hi) of buf hold hops [hop0, hop0 + hi - lo); hops before the stream start are
        # silence. New hops are written after row hi. A row once written is never written again: queued steps
        # hold views of their windows, so when buf is full the live rows move to a new array.
        self._buf = np.empty((self.window + HOP_STORE_SPARE, features.N_FEATURES), np.float32)
        self._buf[: self.window] = features.SILENCE
        self._lo, self._hi = 0, self.window
        self._hop0 = -self.window
        self.n_samples = 0  # 16 kHz samples received
        self.n_hops = 0
        self.next_step = 0  # next model frame to queue
        self.next_frame = 0  # next output frame to emit
        self.total_frames: int | None = None  # set by finish()
        self._pending: list[_Step] = []  # queued, not yet run
        self._in_flight: list[_Step] = []  # handed to the model, awaiting complete()
        self._model_out: dict[int, tuple] = {}  # j -> ((68, 2), step, wait ms, model ms)

    # --- audio in ---------------------------------------------------------------------------------
    def push(self, pcm, chunk: int = -1, recv_time_s: float | None = None) -> int:
        """Add a chunk of PCM (samples x channels, the stream's format). Returns the model steps now due."""
        t0 = time.perf_counter()
        x16 = self.audio.push(pcm)
        return self._add16k(x16, chunk, time.time() if recv_time_s is None else recv_time_s, t0)

    def finish(self, chunk: int = -1, recv_time_s: float | None = None) -> int:
        """End of audio: flush the resampler, pad zeros for the lookahead of the last frames."""
        if self.total_frames is not None:
            raise ValueError("finish() was already called on this stream")
        t0 = time.perf_counter()
        tail = self.audio.flush()
        recv = time.time() if recv_time_s is None else recv_time_s
        self._add16k(tail, chunk, recv, t0)
        self.total_frames = timing.n_frames(self.n_samples, self.fps)
        last_model = self._model_frames_for(self.total_frames) - 1
        need = timing.samples_needed(last_model, self.model_fps, self.lookahead_ms) if last_model >= 0 else 0
        pad = max(0, need - self.n_samples)
        if pad:
            self._add_hops(np.zeros(pad, np.float32))
        return self._queue_due(last_model + 1, chunk, recv, t0)

    def _add16k(self, x16: np.ndarray, chunk: int, recv: float, t0: float) -> int:
        if x16.size:
            self._add_hops(x16)
            self.n_samples += x16.size
        limit = timing.n_frames(self.n_samples, self.model_fps)  # only frames whose time has come
        return self._queue_due(limit, chunk, recv, t0)

    def _add_hops(self, x16: np.ndarray) -> None:
        """Features of x16 (float32, 16 kHz) straight into the hop store."""
        n = self.features.hops_for(x16.size)
        if self._hi + n > len(self._buf):  # full: the live rows move to a new array (old views stay intact)
            live = self._buf[self._lo:self._hi]
            buf = np.empty((len(live) + n + HOP_STORE_SPARE, features.N_FEATURES), np.float32)
            buf[: len(live)] = live
            self._buf, self._lo, self._hi = buf, 0, len(live)
        self.features.push(x16, out=self._buf[self._hi:self._hi + n])  # raises before writing on bad samples
        self._hi += n
        self.n_hops += n

    def _model_frames_for(self, n_out: int) -> int:
        """Model frames needed to produce output frames 0..n_out-1."""
        if n_out <= 0:
            return 0
        k = n_out - 1
        j0, rem = divmod(k * self.model_fps, self.fps)
        return j0 + (2 if rem else 1)

    def _queue_due(self, limit: int, chunk: int, recv: float, t0: float) -> int:
        now = time.perf_counter()
        feat_ms = (now - t0) * 1000.0
        n = 0
        fps, look, window = self.model_fps, self._look_samples, self.window
        while self.next_step < limit:
            j = self.next_step
            last = timing.last_hop_at(j, fps, look)
            if last >= self.n_hops:
                break
            a = self._lo + last - window + 1 - self._hop0
            self._pending.append(_Step(j, self._buf[a:a + window], chunk, recv, feat_ms, now))
            self.next_step += 1
            n += 1
        if n:  # keep only the hops a future window can still read
            first = timing.last_hop_at(self.next_step, fps, look) - window + 1
            drop = min(max(0, first - self._hop0), self._hi - self._lo)
            self._lo += drop
            self._hop0 += drop
        return n

    # --- model steps ----------------------------------------------------------------------------------
    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def pending_feats(self, max_steps: int | None = None) -> np.ndarray:
        """Hand the next due steps to the model: (n, W, F) float32. Call complete() with their outputs."""
        if self._in_flight:
            raise ValueError("complete() the steps in flight before taking more")
        n = len(self._pending) if max_steps is None else min(max_steps, len(self._pending))
        self._in_flight, self._pending = self._pending[:n], self._pending[n:]
        if not n:
            return np.zeros((0, self.window, features.N_FEATURES), np.float32)
        if n == 1:  # the common case live: one step per call, no stacking
            return self._in_flight[0].window[None]
        return np.stack([s.window for s in self._in_flight])

    def complete(self, landmarks: np.ndarray, state_out: np.ndarray, run_start_t: float | None = None,
                 model_ms: float = 0.0) -> list[Frame]:
        """Outputs of the steps in flight -> the output frames they complete, in order.

        run_start_t: perf_counter when the model call began (for the queue/batch-wait stage).
        """
        steps, self._in_flight = self._in_flight, []
        if len(landmarks) != len(steps):
            raise ValueError(f"expected landmarks for {len(steps)} steps, got {len(landmarks)}")
        if steps:
            self.state = np.asarray(state_out, np.float32)
        for step, lm in zip(steps, landmarks):
            wait_ms = 0.0 if run_start_t is None else (run_start_t - step.ready_t) * 1000.0
            self._model_out[step.j] = (np.asarray(lm, np.float32), step, wait_ms, model_ms)
        return self._emit()

    def _emit(self) -> list[Frame]:
        out = []
        while self.total_frames is None or self.next_frame < self.total_frames:
            k = self.next_frame
            j0, rem = divmod(k * self.model_fps, self.fps)
            if j0 not in self._model_out or (rem and j0 + 1 not in self._model_out):
                break
            lm0, step, wait_ms, model_ms = self._model_out[j0]
            if rem:
                lm1, step, wait_ms, model_ms = self._model_out[j0 + 1]
                alpha = np.float32(rem / self.fps)
                lm = lm0 + alpha * (lm1 - lm0)
            else:
                lm = lm0
            if self.smoother is not None:
                lm = self.smoother(lm)
            ctl = None
            if self.with_controls:
                from engine.controls import controls_from_landmarks

                ctl = controls_from_landmarks(lm, self.identity)
            stages = {"features": step.features_ms, "wait": wait_ms, "model": model_ms}
            out.append(Frame(k, k / self.fps, lm, ctl, step.chunk, step.recv_time_s, stages))
            self.next_frame += 1
            for j in [j for j in self._model_out if j < j0]:  # later frames never read them
                del self._model_out[j]
        return out

    def process(self, session, pcm=None, chunk: int = -1, final: bool = False) -> list[Frame]:
        """Push (and optionally finish), run the due steps on `session` alone, return the frames."""
        if pcm is not None:
            self.push(pcm, chunk)
        if final:
            self.finish(chunk)
        if not self._pending:
            return self._emit() if final else []
        feats = self.pending_feats()
        t0 = time.perf_counter()
        lm, state = session.run(feats[None], self.identity[None], self.state[None], self.emotion[None])
        return self.complete(lm[0], state[0], t0, (time.perf_counter() - t0) * 1000.0)
