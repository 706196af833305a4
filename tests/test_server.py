"""The websocket server on 127.0.0.1 with real clients: happy path, bad input, limits, health, mic broadcast."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Self

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from engine import protocol as P
from engine import timing
from engine.config import EngineConfig

CHUNK_MS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A real LandmarkServer on its own event loop in a thread (the tests' loops stay separate)."""

    def __init__(self, config: EngineConfig, mic_factory=None) -> None:
        from engine.server import LandmarkServer

        self.server = LandmarkServer(config, mic_factory=mic_factory)
        self.url = f"ws://127.0.0.1:{config.port}/ws"
        self.http = f"http://127.0.0.1:{config.port}"
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except (OSError, ValueError, RuntimeError) as exc:  # surface start-up failures in the test
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self._stop.wait()
        await self.server.stop()

    def __enter__(self) -> Self:
        self._thread.start()
        self._started.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


@pytest.fixture(scope="module")
def server():
    from engine.session import default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"no model at {default_model_path()}")
    with ServerThread(EngineConfig(port=_free_port(), max_message_bytes=64 * 1024, providers="cpu")) as s:
        yield s


@pytest.fixture(scope="module")
def pcm22k(speech_wav):
    import soundfile as sf

    pcm, sr = sf.read(speech_wav, dtype="int16")
    return pcm, sr


async def _stream(url, pcm, sr, pace_s=0.0, **start):
    """Send the clip in 20 ms chunks, then end; returns (frames, end message, close code)."""
    frames, end = [], None
    async with connect(url, compression=None) as ws:
        await ws.send(P.encode_message(P.Start(sample_rate=sr, format="pcm16", **start)))
        ready = P.parse_server_message(await ws.recv())
        assert isinstance(ready, P.Ready), ready
        chunk = sr * CHUNK_MS // 1000

        async def rx():
            nonlocal end
            async for m in ws:
                if isinstance(m, bytes):
                    frames.append(P.decode_frame_binary(m))
                else:
                    msg = P.parse_server_message(m)
                    if isinstance(msg, P.End):
                        end = msg
                    else:
                        frames.append(msg)

        task = asyncio.create_task(rx())
        for i in range(0, len(pcm), chunk):
            await ws.send(pcm[i:i + chunk].tobytes())
            if pace_s:
                await asyncio.sleep(pace_s)
        await ws.send(P.encode_message(P.End()))
        await task
    return frames, end, ws.close_code


async def _refused(url, *messages, headers=None) -> tuple[int, str, list]:
    """Send messages and return the close code, the reason and any error messages received."""
    got = []
    async with connect(url, compression=None, additional_headers=headers) as ws:
        try:
            for m in messages:
                await ws.send(m)
            async for m in ws:
                got.append(P.parse_server_message(m))
        except ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason, got


def _offline(pcm, sr, **kw):
    from engine.infer import infer_track
    from engine.session import ModelSession

    return infer_track(ModelSession(providers="cpu"), EngineConfig(**kw), pcm.astype(np.float32) / 32768.0, sr)


async def test_happy_path_frames_match_offline(server, pcm22k):
    pcm, sr = pcm22k
    frames, end, code = await _stream(server.url, pcm, sr)
    ref = _offline(pcm, sr)["landmarks"]
    assert code == P.CLOSE_NORMAL
    assert end.frames == len(frames) == len(ref) == timing.n_frames(round(len(pcm) * 16000 / sr), 30)
    assert end.dropped == 0
    assert [f.index for f in frames] == list(range(len(ref)))
    np.testing.assert_allclose(np.stack([f.landmarks for f in frames]), ref, atol=2e-4, rtol=0)
    chunks = [f.chunk for f in frames]
    assert chunks == sorted(chunks) and all(f.send_time_s >= f.recv_time_s for f in frames)


async def test_fragmented_audio_keeps_its_place_among_whole_messages(server, pcm22k):
    """Whole binary messages take the direct path (StreamConnection.audio_sink), a fragmented one the
    message queue; the switch between them must neither reorder nor lose audio."""
    from engine.connection import StreamConnection

    pcm, sr = pcm22k
    chunk = sr * CHUNK_MS // 1000
    blocks = [pcm[i:i + chunk].tobytes() for i in range(0, len(pcm), chunk)]
    frames = []
    async with connect(server.url, compression=None) as ws:
        await ws.send(P.encode_message(P.Start(sample_rate=sr, format="pcm16")))
        assert isinstance(P.parse_server_message(await ws.recv()), P.Ready)
        assert all(isinstance(c, StreamConnection) for c in server.server.connections)

        async def rx():
            async for m in ws:
                if isinstance(m, bytes):
                    frames.append(P.decode_frame_binary(m))

        task = asyncio.create_task(rx())
        for k, block in enumerate(blocks):
            if k == 10:  # one message in three fragments (odd byte splits), then whole messages again
                third = len(block) // 3 | 1
                await ws.send([block[:third], block[third:2 * third], block[2 * third:]])
            else:
                await ws.send(block)
        await ws.send(P.encode_message(P.End()))
        await task
    assert ws.close_code == P.CLOSE_NORMAL
    ref = _offline(pcm, sr)["landmarks"]
    assert [f.index for f in frames] == list(range(len(ref)))
    np.testing.assert_allclose(np.stack([f.landmarks for f in frames]), ref, atol=2e-4, rtol=0)


async def test_json_output_with_controls(server, pcm22k):
    pcm, sr = pcm22k
    frames, end, _ = await _stream(server.url, pcm[: sr], sr, output="json", controls=True, fps=60)
    assert len(frames) == end.frames == timing.n_frames(16000, 60)
    assert all(f.controls is not None and f.controls.shape == (9,) for f in frames)


BAD_CASES = [
    ([b"\x00\x01" * 10], P.CLOSE_UNSUPPORTED, "binary audio before start"),
    (["{oops"], P.CLOSE_INVALID, "bad JSON"),
    (['{"type": "dance", "version": 1}'], P.CLOSE_UNSUPPORTED, "unknown message type"),
    ([P.encode_message(P.Start(sample_rate=16000)), b"\x00\x01\x02"], P.CLOSE_INVALID, "not a whole number"),
    ([P.encode_message(P.Start(sample_rate=16000, format="f32")), np.array([0.0, np.nan], "<f4").tobytes()],
     P.CLOSE_INVALID, "finite"),
    ([P.encode_message(P.Start(sample_rate=16000)), P.encode_message(P.Start(sample_rate=16000))],
     P.CLOSE_INVALID, "not allowed after start"),
    ([P.encode_message(P.Start(sample_rate=16000, emotion="grumpy"))], P.CLOSE_INVALID, "emotion must be one of"),
    ([P.encode_message(P.Subscribe())], P.CLOSE_UNSUPPORTED, "no microphone"),
]


async def test_bad_clients_get_close_codes_while_a_good_stream_loses_nothing(server, pcm22k):
    pcm, sr = pcm22k
    good = asyncio.create_task(_stream(server.url, pcm[: 2 * sr], sr, pace_s=CHUNK_MS / 1000))
    await asyncio.sleep(0.05)
    for messages, code, words in BAD_CASES:
        got_code, reason, errors = await _refused(server.url, *messages)
        assert got_code == code, (messages[0][:40], got_code, reason)
        assert words in reason
        errors = [e for e in errors if isinstance(e, P.Error)]
        assert len(errors) == 1 and errors[0].code == code and words in errors[0].reason
    too_big = np.zeros(40 * 1024, np.int16).tobytes()  # 80 KiB > the 64 KiB limit
    got_code, _, _ = await _refused(server.url, P.encode_message(P.Start(sample_rate=16000)), too_big)
    assert got_code == P.CLOSE_TOO_BIG
    assert not good.done(), "the good stream must still be running while the bad clients are refused"
    frames, end, code = await good
    assert code == P.CLOSE_NORMAL and end.dropped == 0
    assert [f.index for f in frames] == list(range(timing.n_frames(round(2 * sr * 16000 / sr), 30)))


def test_healthz_and_static_files(server):
    with urllib.request.urlopen(server.http + "/healthz", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        h = json.loads(r.read())
    assert h["status"] == "ok" and h["protocol"] == 1 and h["fps"] == 30
    assert h["max_load"] == 0.0, "admission by load is off unless asked for"
    assert h["loop_cpu_share"] is None or 0.0 <= h["loop_cpu_share"] <= 1.5  # None in the first second
    from importlib import resources

    page = resources.files("clients") / "web" / "index.html"
    if page.is_file():  # the browser page (engineer H7) is served from the package at /
        with urllib.request.urlopen(server.http + "/", timeout=5) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
            assert r.read() == page.read_bytes()
    for path in ("/nope.js", "/../engine/config.py", "/.hidden"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.http + path, timeout=5)
        assert info.value.code == 404


async def test_limits_token_and_origin(pcm22k):
    cfg = EngineConfig(port=_free_port(), max_streams=1, token="s3cret", allowed_origins=("http://good.example",),
                       providers="cpu")
    start = P.encode_message(P.Start(sample_rate=16000, token="s3cret"))
    with ServerThread(cfg) as srv:
        code, reason, _ = await _refused(srv.url, P.encode_message(P.Start(sample_rate=16000, token="nope")))
        assert code == P.CLOSE_POLICY and "token" in reason
        code, reason, _ = await _refused(srv.url, start, headers={"Origin": "http://evil.example"})
        assert code == P.CLOSE_POLICY and "origin" in reason
        async with connect(srv.url, compression=None, additional_headers={"Origin": "http://good.example"}) as ws:
            await ws.send(start)
            assert isinstance(P.parse_server_message(await ws.recv()), P.Ready)
            code, reason, _ = await _refused(srv.url, start)
            assert code == P.CLOSE_TRY_AGAIN and "full" in reason


async def test_mic_mode_broadcasts_to_subscribers(speech_wav):
    from engine.demo import LoopedFileSource

    cfg = EngineConfig(port=_free_port(), mic=True, providers="cpu")

    def factory(config, on_block, on_error):
        return LoopedFileSource(str(speech_wav), config.mic_block_ms, on_block, on_error)

    with ServerThread(cfg, mic_factory=factory) as srv:
        got = [[], []]

        async def sub(k, output):
            async with connect(srv.url, compression=None) as ws:
                await ws.send(P.encode_message(P.Subscribe(output=output)))
                ready = P.parse_server_message(await ws.recv())
                assert isinstance(ready, P.Ready) and ready.source == "mic"
                while len(got[k]) < 10:
                    m = await asyncio.wait_for(ws.recv(), 5)
                    got[k].append(P.decode_frame_binary(m) if isinstance(m, bytes) else P.parse_server_message(m))

        await asyncio.gather(sub(0, "binary"), sub(1, "json"))
    for frames in got:
        idx = [f.index for f in frames]
        assert idx == list(range(idx[0], idx[0] + 10))
    common = sorted({f.index for f in got[0]} & {f.index for f in got[1]})
    assert common, "both subscribers must see the same frames"
    a = {f.index: f.landmarks for f in got[0]}
    b = {f.index: f.landmarks for f in got[1]}
    np.testing.assert_array_equal(a[common[0]], b[common[0]])


async def test_slow_consumer_drops_oldest_frames_and_counts_them():
    """A client that stops reading: the outbox keeps the newest frames, drops the oldest and counts them."""
    from engine.connection import Connection
    from engine.stream import Frame

    class StalledSocket:  # send() never completes, like a peer that stopped reading
        def __init__(self):
            self.blocked = asyncio.Event()

        async def send(self, data):
            self.blocked.set()
            await asyncio.Event().wait()

    ws = StalledSocket()
    conn = Connection(ws, "binary", (), capacity=4, frame_log=[])
    lm = np.zeros((68, 2), np.float32)
    conn.enqueue([Frame(0, 0.0, lm, chunk=0)])
    await ws.blocked.wait()  # frame 0 is stuck in send()
    conn.enqueue([Frame(i, i / 30, lm, chunk=i) for i in range(1, 11)])
    assert [f.index for f, _ in conn.outbox] == [7, 8, 9, 10]
    assert conn.dropped == 6
    await conn.stop()



def test_sigterm_closes_clients_with_1001_and_exits_cleanly(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from websockets.sync.client import connect as sync_connect

    port = _free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--port", str(port),
                                 "--providers", "cpu"], env=dict(os.environ, OMP_NUM_THREADS="1"),
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                        assert r.status == 200
                        break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.05)  # the server process is still starting
            with sync_connect(f"ws://127.0.0.1:{port}/ws", compression=None) as ws:
                ws.send(P.encode_message(P.Start(sample_rate=16000)))
                assert isinstance(P.parse_server_message(ws.recv()), P.Ready)
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed):
                    while True:
                        ws.recv(timeout=10)
            assert ws.close_code == 1001
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "shutting down" in log_path.read_text()


def test_start_freezes_the_start_up_heap_so_a_full_collection_walks_only_new_objects():
    import gc

    from engine.session import default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"no model at {default_model_path()}")
    gc.unfreeze()  # the module's server froze this process's heap already: count from this start only
    with ServerThread(EngineConfig(port=_free_port(), providers="cpu")):
        frozen, walked = gc.get_freeze_count(), len(gc.get_objects())
    assert frozen > 10_000, f"expected the start-up heap (modules, ONNX Runtime, websockets) frozen, got {frozen}"
    assert walked < frozen // 10, f"a full collection still walks {walked} objects against {frozen} frozen"


def test_stream_client_cli_saves_every_frame(server, speech_wav, tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "frames.npz"
    assert main(["stream", "--file", str(speech_wav), "--url", server.url, "--save", str(out), "--no-pace"]) == 0
    assert "dropped 0" in capsys.readouterr().out
    import soundfile as sf

    info = sf.info(speech_wav)
    with np.load(out) as z:
        T = timing.n_frames(round(info.frames * 16000 / info.samplerate), 30)
        assert z["landmarks"].shape == (T, 68, 2) and z["landmarks"].dtype == np.float32
        assert int(z["fps"]) == 30 and z["index"].tolist() == list(range(T))
        assert len(z["e2e_ms"]) == T and (z["e2e_ms"] >= 0).all() and (z["server_ms"] >= 0).all()


async def test_stream_client_retries_a_full_server_and_reports_a_refusal(speech_wav, capsys):
    """`kfusion stream` told 1013 (full) waits and tries again; still refused, it exits 1 naming the close."""
    from engine.cli import main

    cfg = EngineConfig(port=_free_port(), max_streams=1, providers="cpu")
    argv = ["stream", "--file", str(speech_wav), "--no-pace"]
    start = P.encode_message(P.Start(sample_rate=16000))
    with ServerThread(cfg) as srv:
        async with connect(srv.url, compression=None) as occupant:  # the one slot, held open
            await occupant.send(start)
            assert isinstance(P.parse_server_message(await occupant.recv()), P.Ready)
            t0 = time.perf_counter()
            assert await asyncio.to_thread(main, [*argv, "--url", srv.url, "--retries", "1"]) == 1
            assert time.perf_counter() - t0 < 8.0, "two refusals and a 1 s wait; a refusal waited out a timeout"
            err = capsys.readouterr().err
            assert err.count("server full or busy (server full (1 connections)") == 1, err
            assert "the server closed the stream (1013: server full" in err
            # the slot frees up while the client waits to try again: the retry streams every frame
            t0 = time.perf_counter()
            retry = asyncio.create_task(asyncio.to_thread(main, [*argv, "--url", srv.url, "--retries", "3"]))
            await asyncio.sleep(0.3)
        assert await retry == 0
        # one refusal, a 1 s wait, one stream: a refusal used to wait out websockets' 10 s close timeout when the
        # client had sent its audio straight after `start` (queued, it stopped the server's reading)
        assert time.perf_counter() - t0 < 8.0, "a refused client was held until the close timed out"
        out, err = capsys.readouterr()
        assert "trying again in 1 s" in err and "dropped 0" in out and "server error" not in err
