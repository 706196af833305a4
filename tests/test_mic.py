"""MicSource on real PortAudio, through a private PulseAudio server whose virtual microphone plays TTS speech."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import numpy as np
import pytest
from realdevices import VMIC_RATE_HZ, PulseAudio, require_portaudio

from engine.mic import MicError, MicSource, list_devices, resolve_device

SPEECH_S = 3.0
LEAD_S = 0.4  # silence the virtual mic plays before the speech


def _int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def _envelope(x: np.ndarray, hop: int = 160) -> np.ndarray:
    n = len(x) // hop
    return np.sqrt((x[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1))


async def _capture(mic: MicSource, seconds: float) -> np.ndarray:
    got, deadline = [], time.monotonic() + seconds
    async for block in mic:
        got.append(block)
        if time.monotonic() >= deadline:
            break
    return np.concatenate(got)


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    require_portaudio()
    with PulseAudio(tmp_path_factory.mktemp("pulse")) as pa:
        yield pa


def test_bad_device_and_settings_are_value_errors(pulse):
    names = [d.name for d in list_devices()]
    assert "pulse" in names, f"PortAudio does not list the ALSA 'pulse' device: {names}"
    assert resolve_device("pulse").name == "pulse"
    with pytest.raises(ValueError, match="matches no input device; expected one of"):
        MicSource("no-such-microphone")
    with pytest.raises(ValueError, match="index of an input device"):
        MicSource(9999)
    with pytest.raises(ValueError, match=r"block_ms must be in \[5, 200\], got 1"):
        MicSource("pulse", block_ms=1)
    with pytest.raises(ValueError, match="sample rates"):
        MicSource("pulse", sample_rate_hz=4000)


def test_captures_the_fed_speech(pulse, speech_16k):
    """The blocks PortAudio delivers are the speech fed into the virtual mic, in order and complete."""
    speech = _int16(speech_16k[: int(SPEECH_S * VMIC_RATE_HZ)])

    async def run():
        async with MicSource("pulse", block_ms=20) as mic:
            assert mic.sample_rate_hz == VMIC_RATE_HZ and mic.block_frames == 320
            first = await mic.__anext__()
            pulse.feed(np.zeros(int(LEAD_S * VMIC_RATE_HZ), np.int16))
            pulse.feed(speech)
            rest = await _capture(mic, LEAD_S + SPEECH_S + 0.6)
            return np.concatenate([first, rest]), mic.overflows, mic.dropped

    x, overflows, dropped = asyncio.run(run())
    assert overflows == 0 and dropped == 0
    ref = speech.astype(np.float32) / 32768.0
    # Align by cross-correlating the 10 ms energy envelopes, then compare sample by sample.
    env_x, env_r = _envelope(x), _envelope(ref)
    lags = np.correlate(env_x - env_x.mean(), env_r - env_r.mean(), "valid")
    lag_hops = int(np.argmax(lags))
    seg_env = env_x[lag_hops:lag_hops + len(env_r)]
    assert np.corrcoef(seg_env, env_r)[0, 1] > 0.95
    fine = np.correlate(x[lag_hops * 160 - 160: lag_hops * 160 + len(ref) + 160], ref, "valid")
    start = lag_hops * 160 - 160 + int(np.argmax(fine))
    seg = x[start:start + len(ref)]
    assert len(seg) == len(ref), "the capture ended before the fed speech did"
    assert np.corrcoef(seg, ref)[0, 1] > 0.99
    speech_rms = float(np.sqrt(np.mean((seg * 32768.0) ** 2)))
    silence_rms = float(np.sqrt(np.mean((x[: max(1, start - 1600)] * 32768.0) ** 2)))
    assert speech_rms > 1000.0, f"speech RMS {speech_rms:.0f} (int16 units) is too low"
    assert silence_rms < 0.01 * speech_rms, f"silence RMS {silence_rms:.1f} vs speech {speech_rms:.0f}"


def test_callback_api_delivers_blocks_on_the_loop(pulse):
    async def run():
        loop_thread, seen = None, []

        def on_block(block):
            nonlocal loop_thread
            loop_thread = asyncio.get_running_loop()
            seen.append(block)

        mic = MicSource("pulse", block_ms=10, on_block=on_block, on_error=lambda e: None)
        with pytest.raises(ValueError, match="delivers through the callback"):
            mic.__aiter__()
        await mic.start()
        await asyncio.sleep(0.5)
        await mic.close()
        return loop_thread, seen

    loop, seen = asyncio.run(run())
    assert loop is not None, "on_block did not run on the event loop"
    assert 25 <= len(seen) <= 60 and all(b.shape == (160,) and b.dtype == np.float32 for b in seen)


def test_slow_consumer_drops_oldest_blocks(pulse):
    async def run():
        async with MicSource("pulse", block_ms=20, max_queue_blocks=10) as mic:
            await asyncio.sleep(1.0)  # not reading: about 50 blocks arrive for a 10-block queue
            first = await mic.__anext__()
            return mic.dropped, mic.blocks, first

    dropped, blocks, first = asyncio.run(run())
    assert blocks >= 40 and dropped == blocks - 10 and first.shape == (320,)


def test_input_overflow_is_counted_and_logged(pulse, caplog):
    """PulseAudio buffers seconds of audio, so no real overflow can be forced: the flag comes from a
    real sounddevice.CallbackFlags handed to the real callback of an open stream."""
    import sounddevice as sd

    async def run():
        async with MicSource("pulse") as mic:
            await mic.__anext__()
            flags = sd.CallbackFlags(sd._lib.paInputOverflow)
            mic._callback(np.zeros((mic.block_frames, 1), np.float32), mic.block_frames, None, flags)
            await asyncio.sleep(0.1)
            return mic.overflows

    with caplog.at_level(logging.WARNING, logger="kfusion.mic"):
        assert asyncio.run(run()) == 1
    assert "input overflow (1 so far)" in caplog.text


def test_stalled_device_raises_clear_error(pulse):
    """The virtual mic's writer freezes (SIGSTOP): no more audio, and the iterator says so."""
    async def run():
        async with MicSource("pulse", stall_timeout_s=0.6) as mic:
            await mic.__anext__()
            os.kill(pulse._feeder.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with pytest.raises(MicError, match="delivered no audio for"):
                    while True:
                        await mic.__anext__()
                return time.monotonic() - t0
            finally:
                os.kill(pulse._feeder.pid, signal.SIGCONT)

    assert asyncio.run(run()) < 3.0


def test_vanishing_device_raises_clear_error(tmp_path):
    """The sound server dies under an open stream: the consumer gets MicError at once, not a hang."""
    require_portaudio()
    with PulseAudio(tmp_path / "pa") as pa:
        async def run():
            async with MicSource("pulse") as mic:
                await mic.__anext__()
                pa.kill()
                t0 = time.monotonic()
                with pytest.raises(MicError, match="stopped by itself|delivered no audio"):
                    while True:
                        await mic.__anext__()
                return time.monotonic() - t0

        assert asyncio.run(run()) < 3.0

        async def reopen():
            async with MicSource("pulse"):
                pass

        with pytest.raises(MicError, match="cannot open mic device 'pulse'"):
            asyncio.run(reopen())


@pytest.mark.slow
def test_serve_mic_broadcasts_a_moving_mouth(speech_16k, tmp_path):
    """`kfusion serve --mic` on the virtual mic: a websocket subscriber gets 30 fps frames whose mouth
    follows the speech the mic plays, as the offline model on the same audio does; when the mic's sound
    server dies, subscribers get an error naming the microphone, not silence."""
    require_portaudio()
    from realdevices import KfusionServer, best_lag_correlation, offline_inner_lip_gaps
    from websockets.sync.client import connect

    from engine import protocol as P
    from engine.face import inner_lip_gap

    speech = speech_16k[: int(SPEECH_S * VMIC_RATE_HZ)]
    ref = offline_inner_lip_gaps(np.concatenate([np.zeros(2 * VMIC_RATE_HZ, np.float32), speech,
                                                 np.zeros(VMIC_RATE_HZ, np.float32)]))

    def collect(ws, seconds: float) -> list[P.FrameMessage]:
        frames, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=5)
            assert isinstance(msg, bytes), f"expected a binary frame, got {msg[:200]!r}"
            frames.append(P.decode_frame_binary(msg))
        return frames

    with PulseAudio(tmp_path / "pulse") as pulse, \
            KfusionServer(tmp_path, "--providers", "cpu", "--mic", "--mic-device", "pulse") as srv:
        assert srv.health()["subscribers"] == 0
        with connect(f"ws://127.0.0.1:{srv.port}/ws", open_timeout=10) as ws:
            ws.send(P.encode_message(P.Subscribe()))
            ready = P.parse_server_message(ws.recv(timeout=10))
            assert isinstance(ready, P.Ready) and ready.source == "mic"
            silent = collect(ws, 1.0)
            end_t = pulse.feed(_int16(speech))
            speaking = collect(ws, end_t - time.monotonic() + 0.3)
            pulse.kill()
            deadline = time.monotonic() + 5
            while isinstance(msg := ws.recv(timeout=5), bytes) and time.monotonic() < deadline:
                pass
            err = P.parse_server_message(msg)
            assert isinstance(err, P.Error) and "microphone" in err.reason, err
    frames = silent + speaking
    assert np.all(np.diff([f.index for f in frames]) == 1), "frames were skipped or reordered"
    assert len(speaking) >= 0.8 * 30 * SPEECH_S, f"{len(speaking)} frames in {SPEECH_S} s of speech"
    live = np.array([float(inner_lip_gap(f.landmarks)) for f in frames[-len(speaking) - 15:]])
    r, lag = best_lag_correlation(live, ref)
    ratio = np.ptp(live) / np.ptp(ref[lag:lag + len(live)])
    assert r > 0.9, f"the broadcast mouth does not follow the mic's speech: r = {r:.3f} vs the offline model"
    assert 0.5 < ratio < 2.0, f"broadcast mouth movement is {ratio:.2f}x the offline model's"
