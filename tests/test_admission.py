"""Admission by load (engine/admission.py): the meter's arithmetic, and a real server turning away the stream
that would pass --max-load while the one it carries loses nothing."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from clients.stream_client import server_health
from engine import protocol as P
from engine import timing
from engine.admission import MIN_WINDOW_S, WINDOW_S, LoadMeter
from engine.config import EngineConfig


@pytest.fixture(scope="module")
def pcm22k(speech_wav):
    import soundfile as sf

    return sf.read(speech_wav, dtype="int16")


class FakeClocks:
    def __init__(self):
        self.t = self.cpu = 0.0

    def run(self, seconds: float, busy_share: float, meter: LoadMeter, streams: int, step: float = 0.5):
        for _ in range(round(seconds / step)):
            self.t += step
            self.cpu += step * busy_share
            meter.sample(streams)


def _meter(max_load: float, min_streams: int = 8) -> tuple[LoadMeter, FakeClocks]:
    c = FakeClocks()
    return LoadMeter(max_load, clock=lambda: c.t, cpu_clock=lambda: c.cpu, min_streams=min_streams), c


def test_share_and_projection():
    meter, clocks = _meter(0.85)
    meter.sample(0)
    assert meter.cpu_share() is None and meter.refusal(100) is None, "no verdict before any window"
    clocks.run(WINDOW_S, 0.8, meter, streams=80)  # 10 ms of loop CPU per stream-second
    assert meter.cpu_share() == pytest.approx(0.8)
    assert meter.refusal(83) is None  # 84 x 0.01 = 0.84 <= 0.85
    why = meter.refusal(85)  # 86 x 0.01 = 0.86 > 0.85
    assert why is not None and "80% of a core for 80 streams" in why and "85% limit" in why
    assert len(why.encode()) <= 123, "a websocket close reason is at most 123 bytes"
    clocks.run(2 * WINDOW_S, 0.2, meter, streams=80)  # the old, busier samples leave the window
    assert meter.cpu_share() == pytest.approx(0.2) and meter.refusal(200) is None


def test_off_short_windows_and_few_streams_always_admit():
    off, clocks = _meter(0.0)
    off.sample(0)
    clocks.run(WINDOW_S, 1.0, off, streams=100)
    assert off.cpu_share() == pytest.approx(1.0) and off.refusal(1000) is None, "0 = measure only"
    short, clocks = _meter(0.5)
    short.sample(0)
    clocks.run(MIN_WINDOW_S / 2, 1.0, short, streams=100)
    assert short.cpu_share() is None and short.refusal(1000) is None
    few, clocks = _meter(0.5, min_streams=8)
    few.sample(4)
    clocks.run(WINDOW_S, 0.9, few, streams=4)  # 4 streams at 0.9 of a core: fixed costs, not streams
    assert few.refusal(10) is None
    with pytest.raises(ValueError, match=r"share of one core in \[0, 1\]"):
        LoadMeter(1.5)
    with pytest.raises(ValueError, match="max_load"):
        EngineConfig(max_load=-0.1)


async def test_a_busy_server_refuses_the_next_stream_and_the_running_one_loses_nothing(pcm22k):
    from tests.test_server import CHUNK_MS, ServerThread, _free_port, _refused, _stream

    pcm, sr = pcm22k
    clip = np.tile(pcm, -(-6 * sr // len(pcm)))[: 6 * sr]  # 6 s of real speech, paced in real time
    # a limit no stream can stay under (0.1 % of a core), counted from the first stream on
    with ServerThread(EngineConfig(port=_free_port(), max_load=0.001, providers="cpu")) as srv:
        srv.server.load.min_streams = 1
        running = asyncio.create_task(_stream(srv.url, clip, sr, pace_s=CHUNK_MS / 1000))
        for _ in range(100):  # until the meter has a window with the stream in it
            await asyncio.sleep(0.1)
            if srv.server.load.refusal(1) is not None:
                break
        # an admitted stream would get `ready` and wait for audio: give it a bounded time to be refused
        code, reason, _ = await asyncio.wait_for(_refused(srv.url, P.encode_message(P.Start(sample_rate=16000))), 10)
        assert code == P.CLOSE_TRY_AGAIN and reason.startswith("server busy") and "0% limit" in reason, reason
        health = await asyncio.to_thread(server_health, srv.server.port, timeout_s=5.0)
        assert health is not None, "/healthz did not answer"
        assert health["max_load"] == 0.001 and 0 < health["loop_cpu_share"] <= 1.5
        assert not running.done(), "the refusal came while the first stream was still running"
        frames, end, code = await running
    assert code == P.CLOSE_NORMAL and end.dropped == 0
    assert [f.index for f in frames] == list(range(timing.n_frames(len(clip) * 16000 // sr, 30)))
