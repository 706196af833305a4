"""`kfusion serve --workers 2`: two worker processes share one port, the parent restarts a dead one and
SIGTERM stops them all; real speech streams through the shared port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from realdevices import free_port

from clients.stream_client import server_health
from engine import protocol as P

START_TIMEOUT_S = 90.0
HEALTH_TRIES = 200


def _pids_seen(port: int, want: int, deadline_s: float) -> set[int]:
    """Worker pids answering /healthz on fresh connections until `want` distinct ones (or the deadline)."""
    seen: set[int] = set()
    t_end = time.monotonic() + deadline_s
    while len(seen) < want and time.monotonic() < t_end:
        h = server_health(port)
        if h is None:
            time.sleep(0.2)  # workers still starting: nothing to wait on but time
            continue
        seen.add(h["pid"])
    return seen


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _serve(port: int, log_path: Path, *extra: str) -> subprocess.Popen:
    """The supervisor; its log (and its workers') goes to a file, which never blocks a writer as a pipe would."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--workers", "2", "--port", str(port),
                                 *extra], env=env, stdout=subprocess.DEVNULL, stderr=log)


def _stream(port: int, audio: np.ndarray) -> int:
    """Stream 16 kHz speech (unpaced) over one connection; the number of landmark frames that came back."""
    from websockets.sync.client import connect

    n = 0
    with connect(f"ws://127.0.0.1:{port}/ws", compression=None, open_timeout=30) as ws:
        ws.send(P.encode_message(P.Start(sample_rate=16000, format="pcm16")))
        ws.recv()  # ready
        for block in np.array_split(audio, max(1, len(audio) // 320)):
            ws.send(P.encode_audio(block, "pcm16"))
        ws.send(P.encode_message(P.End()))
        for msg in ws:
            if isinstance(msg, bytes):
                n += 1
    return n


def test_two_workers_share_the_port_restart_and_stop_on_sigterm(speech_16k, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    proc = _serve(port, log)
    try:
        pids = _pids_seen(port, 2, START_TIMEOUT_S)
        assert len(pids) == 2, f"expected 2 distinct worker pids on port {port}, saw {pids}"
        assert {_parent_pid(p) for p in pids} == {proc.pid}, "the workers must be children of the supervisor"
        audio = speech_16k[: 16000 * 2]
        frames = [_stream(port, audio) for _ in range(4)]
        assert min(frames) >= 55, f"each 2 s stream should give ~60 frames at 30 fps, got {frames}"

        victim = min(pids)
        os.kill(victim, signal.SIGKILL)  # a crashed worker: the supervisor starts a new one
        seen: set[int] = set()
        t_end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < t_end and not (seen - pids):
            h = server_health(port)
            if h is not None:
                seen.add(h["pid"])
        new = seen - pids
        assert new, f"no replacement worker answered after killing {victim} (saw {seen})"
        assert proc.poll() is None, "the supervisor must survive a worker crash"
        workers = (pids - {victim}) | new
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, f"supervisor exit code {rc}: {log.read_text()[-2000:]}"
    time.sleep(0.2)
    assert not [p for p in workers if _alive(p)], f"workers {workers} still running after SIGTERM"
    assert server_health(port) is None, "the port still answers after SIGTERM"


def test_workers_refuse_the_server_mic_and_fail_on_a_missing_model(tmp_path):
    bad = _serve(free_port(), tmp_path / "mic.log", "--mic")
    assert bad.wait(60) == 2 and "--workers 1" in (tmp_path / "mic.log").read_text()
    missing = tmp_path / "missing.onnx"
    proc = _serve(free_port(), tmp_path / "model.log", "--model", str(missing))
    try:
        rc = proc.wait(START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the supervisor kept running although no worker could load the model")
    assert rc == 1, f"expected exit code 1 when no worker can start, got {rc}"
