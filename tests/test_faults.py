"""Faults around a real server, each with a clear outcome: clients that vanish or stop reading, a missing
microphone, a missing/corrupt/mismatched model file, and SIGTERM under load."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from realdevices import KfusionServer, PulseAudio, free_port, require_portaudio
from test_hostile import _check_good, load_good_clip
from test_server import CHUNK_MS, ServerThread, _offline, _stream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from engine import protocol as P
from engine import timing
from engine.config import EngineConfig

REPO = Path(__file__).resolve().parents[1]
CLEANUP_TIMEOUT_S = 5.0
SLOW_AUDIO_S = 30.0  # audio a slow consumer sends (unpaced) while it reads nothing
SHUTDOWN_TIMEOUT_S = 5.0
SIGTERM_STREAMS = 16
# a client process that streams real speech in real time until it is killed
VICTIM_PY = """
import sys, time
import soundfile as sf
from websockets.sync.client import connect
from engine import protocol as P
pcm, sr = sf.read(sys.argv[2], dtype="int16")
chunk = sr // 50
with connect(sys.argv[1], compression=None) as ws:
    ws.send(P.encode_message(P.Start(sample_rate=sr)))
    ws.recv()
    t0, k = time.monotonic(), 0
    while True:
        i = (k * chunk) % (len(pcm) - chunk)
        ws.send(pcm[i:i + chunk].tobytes())
        k += 1
        if k == 25:
            ws.recv(timeout=5)  # a frame came back
            print("streaming", flush=True)
        time.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
"""


@pytest.fixture(scope="module")
def server():
    from engine.session import default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"no model at {default_model_path()}")
    with ServerThread(EngineConfig(port=free_port(), providers="cpu")) as s:
        yield s


@pytest.fixture(scope="module")
def good_clip(speech_wav):
    return load_good_clip(speech_wav)


def _server_streams(srv) -> tuple[int, int, int]:
    s = srv.server
    return s.streams, len(s.connections), len(s.batcher._entries)


async def _wait_streams(srv, n: int) -> None:
    deadline = time.monotonic() + CLEANUP_TIMEOUT_S
    while _server_streams(srv) != (n, n, n) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert _server_streams(srv) == (n, n, n), f"(streams, connections, batcher entries) = {_server_streams(srv)}"


async def test_vanishing_clients_are_cleaned_up_and_others_continue(server, good_clip, speech_wav):
    """One client's TCP connection is reset mid-stream, another client process is SIGKILLed: the server
    drops both streams' state at once, and a real-time stream beside them loses nothing."""
    pcm, sr, ref = good_clip
    good = asyncio.create_task(_stream(server.url, pcm, sr, pace_s=CHUNK_MS / 1000))
    await asyncio.sleep(0.1)
    await _wait_streams(server, 1)

    # 1) TCP reset: SO_LINGER 0 then abort -> the kernel sends RST instead of FIN
    ws = await connect(server.url, compression=None)
    await ws.send(P.encode_message(P.Start(sample_rate=sr)))
    assert isinstance(P.parse_server_message(await ws.recv()), P.Ready)
    for i in range(25):
        await ws.send(pcm[i * sr // 50:(i + 1) * sr // 50].tobytes())
    assert isinstance(await asyncio.wait_for(ws.recv(), 5), bytes)
    await _wait_streams(server, 2)
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()
    await _wait_streams(server, 1)

    # 2) a client process killed mid-stream
    victim = subprocess.Popen([sys.executable, "-c", VICTIM_PY, server.url, str(speech_wav)],  # noqa: ASYNC220
                              cwd=REPO, stdout=subprocess.PIPE, start_new_session=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(victim.stdout.readline), 20)
        assert line.strip() == b"streaming", line
        await _wait_streams(server, 2)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(5)
    finally:
        if victim.poll() is None:
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(5)
    await _wait_streams(server, 1)
    assert not good.done(), "the faults took longer than the good stream"
    _check_good(await good, ref)
    await _wait_streams(server, 0)


async def test_slow_consumer_gets_newest_frames_and_a_drop_count(server, good_clip, speech_16k):
    """A real client that reads nothing while SLOW_AUDIO_S of speech is processed: the server drops the
    oldest frames (one gap), counts them in `end.dropped`, keeps the rest exact, and a real-time stream
    beside it loses nothing."""
    pcm, sr, ref = good_clip
    reps = int(np.ceil(SLOW_AUDIO_S * 16000 / len(speech_16k)))
    slow_pcm = (np.tile(speech_16k, reps)[: int(SLOW_AUDIO_S * 16000)] * 32767).astype(np.int16)
    slow_ref = _offline(slow_pcm, 16000)["landmarks"]
    total = timing.n_frames(len(slow_pcm), 30)
    assert len(slow_ref) == total

    good = asyncio.create_task(_stream(server.url, pcm, sr, pace_s=CHUNK_MS / 1000))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small receive window
    sock.connect(("127.0.0.1", server.server.port))
    sock.setblocking(False)
    frames, end = [], None
    async with connect(server.url, sock=sock, compression=None, max_queue=1) as ws:
        await ws.send(P.encode_message(P.Start(sample_rate=16000)))
        assert isinstance(P.parse_server_message(await ws.recv()), P.Ready)
        for i in range(0, len(slow_pcm), 320):
            await ws.send(slow_pcm[i:i + 320].tobytes())
        await asyncio.sleep(1.5)  # the model runs on; this client reads nothing

        async def rx():
            nonlocal end
            async for m in ws:
                if isinstance(m, bytes):
                    frames.append(P.decode_frame_binary(m))
                else:
                    end = P.parse_server_message(m)

        task = asyncio.create_task(rx())
        await ws.send(P.encode_message(P.End()))
        await task
    assert ws.close_code == P.CLOSE_NORMAL and isinstance(end, P.End), (ws.close_code, end)
    idx = np.array([f.index for f in frames])
    assert end.dropped > 0, "the client kept up; the test did not stall it"
    assert end.frames == len(frames) == total - end.dropped
    missing = np.setdiff1d(np.arange(total), idx)
    assert np.all(np.diff(idx) > 0), "frames out of order"
    assert len(missing) == end.dropped and np.all(np.diff(missing) == 1), "dropped frames must be one oldest run"
    assert idx[-1] == total - 1, "the newest frames must be kept"
    np.testing.assert_allclose(np.stack([f.landmarks for f in frames]), slow_ref[idx], atol=2e-4, rtol=0)
    _check_good(await good, ref)


class RawClient:
    """A websocket client on a blocking socket that reads only when told to (websockets' sans-I/O protocol)."""

    def __init__(self, url: str, port: int, rcvbuf_bytes: int = 4096) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
        self.sock.connect(("127.0.0.1", port))
        self.proto = ClientProtocol(parse_uri(url))
        self.proto.send_request(self.proto.connect())
        self._flush()
        self.messages: list = []
        while self.proto.handshake_exc is None and not any(
                type(e).__name__ == "Response" for e in self.proto.events_received()):
            self.proto.receive_data(self.sock.recv(65536))
        if self.proto.handshake_exc is not None:
            raise self.proto.handshake_exc

    def _flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.sock.sendall(data)

    def send(self, msg: str | bytes) -> None:
        (self.proto.send_text(msg.encode()) if isinstance(msg, str) else self.proto.send_binary(msg))
        self._flush()

    def read_until_closed(self, timeout_s: float) -> list:
        """Read everything up to the server's close frame: text messages decoded, binary as bytes."""
        self.sock.settimeout(timeout_s)
        while self.proto.close_code is None:
            data = self.sock.recv(65536)
            if not data:
                self.proto.receive_eof()
                break
            self.proto.receive_data(data)
            for frame in self.proto.events_received():
                if frame.opcode.name == "TEXT":
                    self.messages.append(P.parse_server_message(frame.data.decode()))
                elif frame.opcode.name == "BINARY":
                    self.messages.append(bytes(frame.data))
            self._flush()  # answer pings and the server's close at once, as a real client does
            # (close_code is set only once the TCP connection is closed, which the server does after our answer)
        self.sock.close()
        return self.messages


@pytest.mark.slow
async def test_client_that_never_reads_after_end_gets_a_policy_close(speech_16k):
    """A client sends its audio and `end` and then reads nothing: after the server's drain timeout it is
    closed with 1008 and a reason (not a bare 1011), and its stream state is gone. (A large outbox keeps
    frames queued beyond what the socket buffers hold.)"""
    from engine.connection import DRAIN_TIMEOUT_S

    pcm = (np.tile(speech_16k, 4)[: 20 * 16000] * 32767).astype(np.int16)
    with ServerThread(EngineConfig(port=free_port(), providers="cpu", outbox_frames=1000)) as server:
        await _never_reads(server, pcm, DRAIN_TIMEOUT_S)


async def _never_reads(server, pcm: np.ndarray, drain_timeout_s: float) -> None:
    client = await asyncio.to_thread(RawClient, server.url, server.server.port)
    client.send(P.encode_message(P.Start(sample_rate=16000)))
    for i in range(0, len(pcm), 320):
        client.send(pcm[i:i + 320].tobytes())
    await asyncio.sleep(2.0)  # the server works through the audio; the frames back up
    client.send(P.encode_message(P.End()))
    await asyncio.sleep(drain_timeout_s + 1.0)
    got = await asyncio.to_thread(client.read_until_closed, 10.0)
    assert client.proto.close_code == P.CLOSE_POLICY, (client.proto.close_code, got[-2:])
    assert "read no frames" in client.proto.close_reason
    errors = [m for m in got if isinstance(m, P.Error)]
    assert len(errors) == 1 and errors[0].code == P.CLOSE_POLICY and not any(isinstance(m, P.End) for m in got)
    assert isinstance(got[0], P.Ready) and all(isinstance(m, bytes) for m in got[1:-1])
    await _wait_streams(server, 0)


# --- start-up faults: `kfusion serve` exits non-zero naming the problem ----------------------------------
def _edited_model(src: Path, dst: Path, **props) -> Path:
    """A copy of the model with metadata_props changed (value None: the key is removed)."""
    import onnx

    m = onnx.load(str(src))
    kept = {p.key: p.value for p in m.metadata_props}
    for k, v in props.items():
        if v is None:
            kept.pop(k, None)
        else:
            kept[k] = str(v)
    del m.metadata_props[:]
    for k, v in kept.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dst))
    return dst


def _serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port()),
            "--providers", "cpu", *args]


def _run_all(cmds: dict[str, list[str]], envs: dict[str, dict] | None = None, timeout_s: float = 60.0) -> dict:
    """Start every command at once (envs: extra environment per command); {name: (returncode, stderr)}."""
    base = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {k: subprocess.Popen(c, cwd=REPO, env={**base, **(envs or {}).get(k, {})}, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, start_new_session=True) for k, c in cmds.items()}
    out = {}
    try:
        for k, p in procs.items():
            _, err = p.communicate(timeout=timeout_s)
            out[k] = (p.returncode, err.decode(errors="replace"))
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
    return out


def test_bad_model_files_stop_serve_with_a_clear_error(tmp_path):
    from engine import features
    from engine.session import default_model_path

    src = default_model_path()
    data = src.read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    cases = {  # name -> (model path, words the error must contain)
        "missing": (tmp_path / "nope.onnx", "model file not found"),
        "truncated": (tmp_path / "truncated.onnx", "not a loadable ONNX model"),
        "random": (tmp_path / "random.onnx", "not a loadable ONNX model"),
        "n_features": (_edited_model(src, tmp_path / "nf.onnx", n_features=features.N_FEATURES + 3),
                       f"n_features: engine expects {features.N_FEATURES}, model has {features.N_FEATURES + 3}"),
        "feature_version": (_edited_model(src, tmp_path / "fv.onnx", feature_version="v0-other"),
                            "feature_version: engine expects"),
        "no_window": (_edited_model(src, tmp_path / "nw.onnx", window_hops=None),
                      "not a kfusion model, metadata_props lacks ['window_hops']"),
    }
    results = _run_all({k: _serve_cmd("--model", str(path)) for k, (path, _) in cases.items()})
    for name, (path, words) in cases.items():
        rc, err = results[name]
        assert rc != 0, f"{name}: serve exited 0\n{err[-1500:]}"
        assert "kfusion serve: error:" in err and words in err and str(path) in err, f"{name}:\n{err[-1500:]}"
        assert "Traceback" not in err, f"{name}: a traceback instead of a clear message\n{err[-1500:]}"


def test_serve_mic_without_a_usable_device_stops_with_a_clear_error(tmp_path):
    """No sound server at all, and a sound server without the named device (H7's PulseAudio helper)."""
    require_portaudio()
    env_none = {"PULSE_SERVER": f"unix:{tmp_path / 'no-such-socket'}"}
    with PulseAudio(tmp_path / "pulse") as pa:
        results = _run_all({"nodevice": _serve_cmd("--mic"),
                            "badname": _serve_cmd("--mic", "--mic-device", "no-such-microphone"),
                            "badindex": _serve_cmd("--mic", "--mic-device", "9999")},
                           envs={"nodevice": env_none, "badname": pa.env(), "badindex": pa.env()})
    expect = {"nodevice": "--mic: PortAudio lists no input device",
              "badname": "mic device 'no-such-microphone' matches no input device; expected one of",
              "badindex": "mic device must be the index of an input device"}
    for name, words in expect.items():
        rc, err = results[name]
        assert rc != 0 and words in err and "Traceback" not in err, f"{name} (rc {rc}):\n{err[-1500:]}"


async def test_sigterm_under_load_closes_clients_with_1001_and_exits_0(tmp_path, speech_wav):
    import soundfile as sf

    pcm, sr = sf.read(speech_wav, dtype="int16")
    chunk = sr * CHUNK_MS // 1000
    with KfusionServer(tmp_path, "--providers", "cpu") as srv:
        url = f"ws://127.0.0.1:{srv.port}/ws"
        got = [0] * SIGTERM_STREAMS

        async def client(k: int):
            async with connect(url, compression=None) as ws:
                await ws.send(P.encode_message(P.Start(sample_rate=sr)))
                await ws.recv()

                async def rx():
                    async for m in ws:
                        got[k] += isinstance(m, bytes)

                task = asyncio.create_task(rx())
                t0 = time.monotonic()
                try:
                    for i in range(10_000):
                        j = (i * chunk) % (len(pcm) - chunk)
                        await ws.send(pcm[j:j + chunk].tobytes())
                        await asyncio.sleep(max(0.0, t0 + (i + 1) * CHUNK_MS / 1000 - time.monotonic()))
                except ConnectionClosed:
                    pass
                await asyncio.wait_for(task, SHUTDOWN_TIMEOUT_S)
            return ws.close_code, ws.close_reason

        clients = asyncio.gather(*(client(k) for k in range(SIGTERM_STREAMS)))
        deadline = time.monotonic() + 20
        while min(got) < 15 and time.monotonic() < deadline:  # every stream is getting frames
            await asyncio.sleep(0.05)
        assert min(got) >= 15, got
        assert srv.health()["streams"] == SIGTERM_STREAMS
        t0 = time.monotonic()
        os.kill(srv.proc.pid, signal.SIGTERM)
        closes = await asyncio.wait_for(clients, SHUTDOWN_TIMEOUT_S)
        rc = await asyncio.to_thread(srv.proc.wait, SHUTDOWN_TIMEOUT_S)
        took = time.monotonic() - t0
        log = srv.log()
    assert rc == 0, f"serve exited {rc} on SIGTERM:\n{log}"
    assert all(code == P.CLOSE_GOING_AWAY for code, _ in closes), closes
    assert took < SHUTDOWN_TIMEOUT_S and "shutting down" in log and "Traceback" not in log, log
