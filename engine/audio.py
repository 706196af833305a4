"""Audio input: validate PCM chunks, convert int16 to float32, downmix, and resample to 16 kHz as a stream.

Usage: `ai = AudioInput(48000, channels=2, sample_format="pcm16"); y16k = ai.push(chunk); tail = ai.flush()`.
"""

from __future__ import annotations

import numpy as np

from engine.config import MAX_INPUT_RATE_HZ, MIN_INPUT_RATE_HZ, SAMPLE_RATE_HZ

SAMPLE_FORMATS = {"f32": np.dtype("<f4"), "pcm16": np.dtype("<i2")}  # wire format: little-endian
PCM16_FULL_SCALE = 32768.0
MAX_CHANNELS = 32
RESAMPLE_QUALITY = "HQ"  # soxr quality for every rate that is not already 16 kHz


class AudioInput:
    """One stream's audio front door: PCM chunks of any size in, float32 mono 16 kHz samples out.

    Every check runs before any state changes, so a rejected chunk leaves the stream as it was.
    """

    def __init__(self, sample_rate_hz: int, channels: int = 1, sample_format: str = "f32") -> None:
        if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, (int, np.integer)):
            raise ValueError(f"sample_rate_hz must be an integer in Hz, got {sample_rate_hz!r}")  # noqa: TRY004 (house rule)
        if not MIN_INPUT_RATE_HZ <= sample_rate_hz <= MAX_INPUT_RATE_HZ:
            raise ValueError(
                f"sample_rate_hz must be in {MIN_INPUT_RATE_HZ}..{MAX_INPUT_RATE_HZ} Hz, got {sample_rate_hz}"
            )
        if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)):
            raise ValueError(f"channels must be an integer, got {channels!r}")  # noqa: TRY004 (house rule)
        if not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be in 1..{MAX_CHANNELS}, got {channels}")
        if sample_format not in SAMPLE_FORMATS:
            raise ValueError(f"sample_format must be one of {sorted(SAMPLE_FORMATS)}, got {sample_format!r}")
        self.sample_rate_hz = int(sample_rate_hz)
        self.channels = int(channels)
        self.sample_format = sample_format
        self.dtype = SAMPLE_FORMATS[sample_format]
        self.frame_bytes = self.dtype.itemsize * self.channels  # one sample of every channel
        self._what = f"{self.sample_format} ({self.dtype.name}) PCM with {self.channels} channel(s)"  # for errors
        self._resampler = None
        if self.sample_rate_hz != SAMPLE_RATE_HZ:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.sample_rate_hz, SAMPLE_RATE_HZ, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        self.frames_in = 0  # input frames accepted so far
        self.samples_out = 0  # 16 kHz samples returned so far
        self.flushed = False

    def push(
        self, pcm: bytes | bytearray | memoryview | np.ndarray, sample_rate_hz: int | None = None
    ) -> np.ndarray:
        """One chunk in (bytes, or an array: (frames,) mono, (frames * channels,) interleaved or
        (frames, channels)) -> (n,) float32 at 16 kHz. sample_rate_hz, when given, must not change."""
        if self.flushed:
            raise ValueError("this AudioInput was flushed; start a new one for a new stream")
        if sample_rate_hz is not None and sample_rate_hz != self.sample_rate_hz:
            raise ValueError(
                f"the sample rate cannot change mid-stream: expected {self.sample_rate_hz} Hz, got {sample_rate_hz}"
            )
        frames = self._validate(pcm)  # (frames, channels) in the stream's dtype; raises before any change
        if self.dtype.kind == "i" and self.channels == 1:  # the common case: no channel mean to take
            mono = frames[:, 0].astype(np.float32)  # a new array; exact, and so is the power-of-two scale
            mono *= np.float32(1.0 / PCM16_FULL_SCALE)
        elif self.dtype.kind == "i":
            mono = frames.astype(np.float32).mean(axis=1, dtype=np.float32) / np.float32(PCM16_FULL_SCALE)
        elif self.channels == 1:
            mono = frames[:, 0]
        else:
            mono = frames.mean(axis=1, dtype=np.float32)
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        self.frames_in += frames.shape[0]
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        elif mono.base is not None or not mono.flags.writeable:
            mono = mono.copy()  # never hand out a view of the caller's buffer
        self.samples_out += mono.shape[0]
        return mono

    def flush(self) -> np.ndarray:
        """End of stream: the resampler's last samples (empty at 16 kHz). The stream takes no more input."""
        if self.flushed:
            raise ValueError("this AudioInput was already flushed")
        self.flushed = True
        if self._resampler is None:
            return np.zeros(0, np.float32)
        tail = np.ascontiguousarray(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self.samples_out += tail.shape[0]
        return tail

    def _validate(self, pcm) -> np.ndarray:
        """Check one chunk and return it as (frames, channels); raises ValueError naming what was expected."""
        what = self._what
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            n = memoryview(pcm).nbytes
            if n == 0:
                raise ValueError(
                    f"empty audio chunk: expected {what}, at least one frame of {self.frame_bytes} bytes"
                )
            if n % self.frame_bytes:
                raise ValueError(
                    f"chunk of {n} bytes is not a whole number of {self.frame_bytes}-byte frames of {what}"
                )
            arr = np.frombuffer(pcm, dtype=self.dtype).reshape(-1, self.channels)
        elif isinstance(pcm, np.ndarray):
            if pcm.dtype != self.dtype and pcm.dtype != self.dtype.newbyteorder("="):
                raise ValueError(f"expected a numpy array of {self.dtype.name} for {what}, got {pcm.dtype}")
            if pcm.size == 0:
                raise ValueError(f"empty audio chunk: expected {what}, at least one frame")
            if pcm.ndim == 1:
                if pcm.shape[0] % self.channels:
                    raise ValueError(
                        f"interleaved chunk of {pcm.shape[0]} samples is not a multiple of {self.channels} channels"
                    )
                arr = pcm.reshape(-1, self.channels)
            elif pcm.ndim == 2 and pcm.shape[1] == self.channels:
                arr = pcm
            else:
                raise ValueError(
                    f"expected shape (frames,) interleaved or (frames, {self.channels}), got {pcm.shape}"
                )
        else:
            raise ValueError(f"expected bytes or a numpy array of {what}, got {type(pcm).__name__}")  # noqa: TRY004
        if self.dtype.kind == "f" and not np.isfinite(arr.sum(dtype=np.float64)):
            raise ValueError("audio samples must be finite: the chunk holds NaN or inf")
        return arr
