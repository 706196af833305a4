"""Server-side microphone capture: PortAudio (sounddevice) blocks handed to an asyncio consumer.

Usage (inside a running event loop; `kfusion serve --mic` and `kfusion stream --mic` do this):

    async with MicSource.from_config(cfg) as mic:      # or MicSource(device="pulse", block_ms=20)
        async for block in mic:                        # (n,) float32 mono in [-1, 1] at mic.sample_rate_hz
            stream.push(block)

Callback style: `MicSource(..., on_block=fn, on_error=fn_err)`; after `await mic.start()` the loop
calls fn(block) for every block and fn_err(MicError) once if the device fails; `await mic.close()`.
The PortAudio callback only copies the block and hands it over with `loop.call_soon_threadsafe`.
`mic.overflows` counts input overflows PortAudio reported in `status`; `mic.dropped` counts blocks
dropped (oldest first) because an iterator consumer fell more than `max_queue_blocks` behind.
Errors: ValueError for a bad device or setting (naming the input devices), MicError when the device
cannot be opened, stops by itself, or delivers no audio for `stall_timeout_s` (unplugged, server gone).
The rate is 16 kHz when the device takes it, else the device's own rate: resample downstream
(engine/audio.py). `list_devices()` lists the input devices; `python -m engine.mic` prints them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.config import MAX_INPUT_RATE_HZ, MIN_INPUT_RATE_HZ, SAMPLE_RATE_HZ

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("kfusion.mic")

DEFAULT_BLOCK_MS = 20
DEFAULT_STALL_TIMEOUT_S = 2.0  # no block for this long: the device is gone or stuck
DEFAULT_MAX_QUEUE_BLOCKS = 50  # 1 s of 20 ms blocks buffered for a slow iterator consumer
OVERFLOW_LOG_INTERVAL_S = 5.0  # at most one overflow warning per interval
FALLBACK_RATES_HZ = (SAMPLE_RATE_HZ, 48_000, 44_100)
PA_INVALID_CHANNEL_COUNT = -9998  # PortAudio's paInvalidChannelCount
PA_INVALID_SAMPLE_RATE = -9997  # PortAudio's paInvalidSampleRate


class MicError(RuntimeError):
    """The microphone could not be opened, stopped by itself, or went silent."""


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    default_samplerate_hz: float
    is_default: bool


def _sd():
    """Import sounddevice lazily so that importing this module never needs PortAudio."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio2 is missing
        raise MicError(f"PortAudio is not available ({exc}); install libportaudio2") from exc
    return sounddevice


def list_devices() -> list[InputDevice]:
    """All PortAudio devices with at least one input channel."""
    sd = _sd()
    try:
        default_in = sd.default.device[0]
        if default_in is None or default_in < 0:
            default_in = sd.query_devices(kind="input")["index"]
    except sd.PortAudioError:
        default_in = -1
    out = []
    for d in sd.query_devices():
        if d["max_input_channels"] > 0:
            out.append(InputDevice(
                index=int(d["index"]), name=d["name"], hostapi=sd.query_hostapis(d["hostapi"])["name"],
                max_input_channels=int(d["max_input_channels"]),
                default_samplerate_hz=float(d["default_samplerate"]), is_default=d["index"] == default_in,
            ))
    return out


def resolve_device(device: int | str | None) -> InputDevice:
    """Find an input device by index, exact name, or unique case-insensitive name fragment."""
    devices = list_devices()
    if not devices:
        raise MicError("PortAudio lists no input device")
    names = ", ".join(f"{d.index}: {d.name!r}" for d in devices)
    if device is None or device == "":
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if isinstance(device, int):
        for d in devices:
            if d.index == device:
                return d
        raise ValueError(f"mic device must be the index of an input device ({names}), got {device}")
    exact = [d for d in devices if d.name == device]
    if exact:
        return exact[0]
    partial = [d for d in devices if device.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    what = "matches several" if partial else "matches no"
    raise ValueError(f"mic device {device!r} {what} input device; expected one of {names}")


def _pa_code(exc) -> int | None:
    """PortAudio error code of a sounddevice.PortAudioError (args: message, code, host error)."""
    return exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None


def _choose_rate(dev: InputDevice, channels: int, requested_hz: int | None) -> int:
    sd = _sd()
    candidates = [requested_hz] if requested_hz else [*FALLBACK_RATES_HZ, int(dev.default_samplerate_hz)]
    for rate in candidates:
        if not MIN_INPUT_RATE_HZ <= rate <= MAX_INPUT_RATE_HZ:
            continue
        try:
            sd.check_input_settings(device=dev.index, channels=channels, dtype="float32", samplerate=rate)
        except sd.PortAudioError as exc:
            if _pa_code(exc) != PA_INVALID_SAMPLE_RATE:
                raise MicError(f"cannot open mic device {dev.name!r}: {exc}") from exc
            continue
        return int(rate)
    raise ValueError(
        f"mic device {dev.name!r} takes none of the sample rates {candidates} within "
        f"[{MIN_INPUT_RATE_HZ}, {MAX_INPUT_RATE_HZ}] Hz (its default is {dev.default_samplerate_hz:g} Hz)"
    )


class MicSource:
    """One PortAudio input stream delivering mono float32 blocks to an asyncio consumer."""

    def __init__(
        self,
        device: int | str | None = None,
        *,
        sample_rate_hz: int | None = None,
        block_ms: int = DEFAULT_BLOCK_MS,
        on_block: Callable[[np.ndarray], None] | None = None,
        on_error: Callable[[MicError], None] | None = None,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        max_queue_blocks: int = DEFAULT_MAX_QUEUE_BLOCKS,
    ) -> None:
        if not 5 <= block_ms <= 200:
            raise ValueError(f"block_ms must be in [5, 200], got {block_ms}")
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be > 0, got {stall_timeout_s}")
        if max_queue_blocks < 1:
            raise ValueError(f"max_queue_blocks must be >= 1, got {max_queue_blocks}")
        if on_error is not None and on_block is None:
            raise ValueError("on_error needs on_block (without on_block, errors are raised by the iterator)")
        self.device = resolve_device(device)
        self.channels = 1 if self._takes_mono() else min(2, self.device.max_input_channels)
        self.sample_rate_hz = _choose_rate(self.device, self.channels, sample_rate_hz)
        self.block_ms = block_ms
        self.block_frames = max(1, round(self.sample_rate_hz * block_ms / 1000))
        self.stall_timeout_s = float(stall_timeout_s)
        self.overflows = 0  # PortAudio input overflows seen in the callback status
        self.dropped = 0  # blocks dropped because the iterator consumer lagged
        self.blocks = 0  # blocks delivered to the loop
        self.error: MicError | None = None
        self._on_block, self._on_error = on_block, on_error
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue_blocks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream = None
        self._watchdog: asyncio.Task | None = None
        self._closing = False
        self._cb_blocks = 0  # blocks seen by the PortAudio callback (the watchdog's heartbeat)
        self._last_overflow_log_t = -OVERFLOW_LOG_INTERVAL_S

    @classmethod
    def from_config(cls, cfg, **kwargs) -> MicSource:
        """Device and block size from an EngineConfig (mic_device, mic_block_ms)."""
        return cls(cfg.mic_device, block_ms=cfg.mic_block_ms, **kwargs)

    def _takes_mono(self) -> bool:
        sd = _sd()
        try:
            sd.check_input_settings(device=self.device.index, channels=1, dtype="float32")
        except sd.PortAudioError as exc:
            if _pa_code(exc) != PA_INVALID_CHANNEL_COUNT:
                raise MicError(f"cannot open mic device {self.device.name!r}: {exc}") from exc
            return False
        return True

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> MicSource:
        if self._stream is not None:
            raise MicError("this MicSource was already started")
        sd = _sd()
        self._loop = asyncio.get_running_loop()
        try:
            self._stream = sd.InputStream(
                device=self.device.index, samplerate=self.sample_rate_hz, blocksize=self.block_frames,
                channels=self.channels, dtype="float32", callback=self._callback,
                finished_callback=self._finished,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            if self._stream is not None:
                self._stream.close(ignore_errors=True)
            self._stream = None
            raise MicError(f"cannot open mic device {self.device.name!r} at {self.sample_rate_hz} Hz: {exc}") \
                from exc
        self._watchdog = self._loop.create_task(self._watch())
        log.info("mic %r (%s) open: %d Hz, %d ch, %d-frame blocks (%d ms)", self.device.name,
                 self.device.hostapi, self.sample_rate_hz, self.channels, self.block_frames, self.block_ms)
        return self

    async def close(self) -> None:
        """Stop the device; an iterator consumer then ends (or raises the error that ended it)."""
        if self._closing:
            return
        self._closing = True
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        stream, self._stream = self._stream, None
        if stream is not None:
            sd = _sd()
            try:  # abort in a thread: PortAudio may block while a vanished server times out
                await asyncio.to_thread(self._abort, stream)
            except sd.PortAudioError as exc:
                log.warning("mic %r did not close cleanly: %s", self.device.name, exc)
        self._put_nowait(None)
        log.info("mic %r closed: %d blocks, %d overflows, %d dropped", self.device.name,
                 self.blocks, self.overflows, self.dropped)

    @staticmethod
    def _abort(stream) -> None:
        stream.abort()
        stream.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # --- PortAudio thread ------------------------------------------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        # (frames, channels) float32, valid only during this call: copy, hand over, return.
        block = indata[:, 0].copy() if indata.shape[1] == 1 else indata.mean(axis=1, dtype=np.float32)
        self._cb_blocks += 1
        try:
            self._loop.call_soon_threadsafe(self._deliver, block, bool(status.input_overflow))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            raise _sd().CallbackAbort from None

    def _finished(self) -> None:
        if not self._closing and self._loop is not None and not self._loop.is_closed():
            err = MicError(f"mic device {self.device.name!r} stopped by itself (disconnected or failed)")
            self._loop.call_soon_threadsafe(self._fail, err)

    # --- event loop ------------------------------------------------------------------------------
    def _deliver(self, block: np.ndarray, overflow: bool) -> None:
        if self._closing:
            return
        self.blocks += 1
        if overflow:
            self.overflows += 1
            now = time.monotonic()
            if now - self._last_overflow_log_t >= OVERFLOW_LOG_INTERVAL_S:
                self._last_overflow_log_t = now
                log.warning("mic %r input overflow (%d so far): audio was lost before it reached us",
                            self.device.name, self.overflows)
        if self._on_block is not None:
            self._on_block(block)
        else:
            self._put_nowait(block)

    def _put_nowait(self, item) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += item is not None  # the end marker displaces a block but is not a lag drop
        self._queue.put_nowait(item)

    def _fail(self, err: MicError) -> None:
        if self.error is not None or self._closing:
            return
        self.error = err
        log.error("%s", err)
        if self._on_error is not None:
            self._on_error(err)
        self._loop.create_task(self.close())

    async def _watch(self) -> None:
        # Counts silence only while the loop itself runs, so a blocked event loop is not a dead device.
        period_s = min(0.25, self.stall_timeout_s / 4)
        silent_s, seen, last_t = 0.0, self._cb_blocks, self._loop.time()
        while not self._closing:
            await asyncio.sleep(period_s)
            now = self._loop.time()
            step_s, last_t = min(now - last_t, 2 * period_s), now
            if self._cb_blocks != seen:
                silent_s, seen = 0.0, self._cb_blocks
                continue
            silent_s += step_s
            if silent_s > self.stall_timeout_s:
                self._fail(MicError(
                    f"mic device {self.device.name!r} delivered no audio for {silent_s:.1f} s "
                    f"(unplugged, its sound server gone, or stalled)"))
                return

    def __aiter__(self) -> MicSource:
        if self._on_block is not None:
            raise ValueError("a MicSource with on_block delivers through the callback, not by iteration")
        return self

    async def __anext__(self) -> np.ndarray:
        if self._stream is None and not self._closing:
            raise MicError("start the MicSource (await mic.start() or `async with`) before iterating")
        if self.error is not None and self._queue.empty():
            raise self.error
        block = await self._queue.get()
        if block is None:
            if self.error is not None:
                raise self.error
            raise StopAsyncIteration
        return block


def main() -> None:
    for d in list_devices():
        mark = "*" if d.is_default else " "
        print(f"{mark} {d.index:3d}  {d.name}  [{d.hostapi}]  {d.max_input_channels} ch, "
              f"{d.default_samplerate_hz:g} Hz")


if __name__ == "__main__":
    main()
