"""Real devices for tests: a PulseAudio server with a virtual microphone, and headless Chromium over CDP.

Both start as child processes of the test (killed by pid on exit) and skip the test when the tool is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from clients.stream_client import server_health

if TYPE_CHECKING:
    from typing_extensions import Self

VMIC_RATE_HZ = 16_000
FEED_CHUNK_MS = 20
CHROMIUM = "/usr/bin/chromium"
# Writes 20 ms s16le chunks into the fifo in real time: bytes from stdin when there are any, else silence
# (module-pipe-source stalls without a writer, like a device that went away).
FEEDER_PY = f"""
import os, sys, time
chunk = {VMIC_RATE_HZ * FEED_CHUNK_MS // 1000 * 2}
fd = os.open(sys.argv[1], os.O_WRONLY)
src = sys.stdin.buffer.fileno()
os.set_blocking(src, False)
buf, written, t0 = bytearray(), 0, time.monotonic()
while True:
    try:
        buf += os.read(src, 1 << 16)
    except BlockingIOError:
        pass
    out = bytes(buf[:chunk]).ljust(chunk, bytes(1))
    del buf[:chunk]
    try:
        os.write(fd, out)
    except BrokenPipeError:
        break
    written += chunk // 2
    time.sleep(max(0.0, written / {VMIC_RATE_HZ} - (time.monotonic() - t0)))
"""
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
    "--disable-dev-shm-usage", "--mute-audio",
)
VIEWPORT_PX = (1100, 720)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, period_s: float = 0.05):
    """Poll predicate() until it returns something truthy; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def _stop_process(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """End a child started with start_new_session=True: its whole process group, by its pid."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


def require_portaudio() -> None:
    """Skip the test when sounddevice cannot load the PortAudio library."""
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:
        pytest.skip(f"PortAudio is not available ({exc}; Debian: libportaudio2)")


def _refresh_portaudio() -> None:
    """PortAudio lists devices once, at initialisation: re-initialise it if this process already did."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


class PulseAudio:
    """A private PulseAudio server whose default source `vmic` plays what feed() queues, else silence.

    While it runs, PULSE_SERVER in os.environ points PortAudio's ALSA `pulse` device (and child
    processes) at it. Use as a context manager.
    """

    def __init__(self, workdir: Path) -> None:
        if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
            pytest.skip("pulseaudio/pactl are not installed (Debian: pulseaudio pulseaudio-utils)")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "native"
        self.fifo = self.dir / "vmic.fifo"
        self.server = f"unix:{self.socket}"
        self.proc: subprocess.Popen | None = None
        self._saved_env: dict[str, str | None] = {}
        self._feeder: subprocess.Popen | None = None
        self._feed_end_t = 0.0

    def env(self) -> dict[str, str]:
        return {"PULSE_SERVER": self.server, "PULSE_RUNTIME_PATH": str(self.dir)}

    def pactl(self, *args: str) -> str:
        out = subprocess.run(["pactl", *args], env={**os.environ, **self.env()}, capture_output=True,
                             text=True, timeout=10, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def start(self) -> PulseAudio:
        for p in (self.socket, self.fifo):
            p.unlink(missing_ok=True)
        with open(self.dir / "pulseaudio.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
                 "--use-pid-file=no", "--log-target=stderr", "--disable-shm=yes",
                 f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
                 (f"--load=module-pipe-source source_name=vmic file={self.fifo} format=s16le "
                  f"rate={VMIC_RATE_HZ} channels=1")],
                env={**os.environ, "HOME": str(self.dir), **self.env()}, stdout=log, stderr=log,
                start_new_session=True,
            )
        try:
            wait_for(lambda: self.socket.exists() and self.fifo.exists() or self.proc.poll() is not None,
                     10, "pulseaudio to create its socket and fifo")
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited: {(self.dir / 'pulseaudio.log').read_text()[-2000:]}")
            self.pactl("set-default-source", "vmic")
            # A separate process, so that audio keeps flowing while the test process holds the GIL.
            self._feeder = subprocess.Popen([sys.executable, "-c", FEEDER_PY, str(self.fifo)],
                                            stdin=subprocess.PIPE, start_new_session=True)
        except BaseException:
            self.stop()
            raise
        for key, value in self.env().items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        _refresh_portaudio()
        return self

    def feed(self, pcm16: np.ndarray) -> float:
        """Queue int16 mono 16 kHz samples for the virtual mic; returns when they will have played (monotonic s)."""
        if pcm16.dtype != np.int16 or pcm16.ndim != 1:
            raise ValueError(f"feed expects 1-D int16 samples, got {pcm16.dtype} {pcm16.shape}")
        self._feeder.stdin.write(pcm16.tobytes())
        self._feeder.stdin.flush()
        self._feed_end_t = max(self._feed_end_t, time.monotonic()) + len(pcm16) / VMIC_RATE_HZ
        return self._feed_end_t

    def kill(self) -> None:
        """Make the microphone vanish: the sound server dies under its clients."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self._feeder is not None:
            self._feeder.stdin.close()
            _stop_process(self._feeder)
        if self.proc is not None:
            _stop_process(self.proc)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        _refresh_portaudio()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class Chromium:
    """Headless Debian Chromium with a fake microphone playing `audio_wav`, driven over the DevTools protocol."""

    def __init__(self, workdir: Path, audio_wav: Path | None = None, extra_flags: tuple[str, ...] = ()) -> None:
        if not os.access(CHROMIUM, os.X_OK):
            pytest.skip(f"{CHROMIUM} is not installed (Debian: chromium)")
        self.dir = Path(workdir)
        self.profile = self.dir / "profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        flags = [*CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={self.profile}", "--remote-debugging-port=0"]
        if audio_wav is not None:
            flags.append(f"--use-file-for-fake-audio-capture={audio_wav}")
        self.flags = flags
        self.proc: subprocess.Popen | None = None
        self.ws = None
        self._next_id = 0
        self._stack = contextlib.ExitStack()
        self.console: list[str] = []

    def start(self) -> Chromium:
        from websockets.sync.client import connect

        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        with open(self.dir / "chromium.log", "wb") as log:
            self.proc = subprocess.Popen([CHROMIUM, *self.flags, "about:blank"], stdout=log, stderr=log,
                                         start_new_session=True)
        try:
            text = wait_for(lambda: port_file.exists() and port_file.read_text(), 30, "Chromium DevTools port")
            port = int(text.split()[0])
            targets = wait_for(lambda: [t for t in self._json(port, "/json/list") if t["type"] == "page"],
                               10, "a Chromium page target")
            self.ws = self._stack.enter_context(
                connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10))
            self.send("Runtime.enable")
            self.send("Page.enable")
            self.send("Emulation.setDeviceMetricsOverride", {"width": VIEWPORT_PX[0], "height": VIEWPORT_PX[1],
                                                             "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _json(port: int, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def send(self, method: str, params: dict | None = None, timeout_s: float = 30.0) -> dict:
        """One CDP command; returns its result (console messages seen meanwhile go to self.console)."""
        self._next_id += 1
        msg_id = self._next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("method") == "Runtime.consoleAPICalled":
                args = reply["params"]["args"]
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif reply.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(reply["params"]["exceptionDetails"])[:500])
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"CDP {method} failed: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str, timeout_s: float = 30.0):
        """Evaluate JS in the page (promises awaited) and return its JSON value."""
        res = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, timeout_s)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page JS failed: {json.dumps(res['exceptionDetails'])[:800]}")
        return res["result"].get("value")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        wait_for(lambda: self.evaluate("document.readyState") == "complete", 15, f"{url} to load", 0.1)

    def screenshot(self, path: Path) -> Path:
        import base64

        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def stop(self) -> None:
        self._stack.close()
        self.ws = None
        if self.proc is not None:
            _stop_process(self.proc)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class KfusionServer:
    """`kfusion serve` as a child process on a free port; waits for /healthz, ends with SIGTERM."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = args
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict | None:
        return server_health(self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def start(self, timeout_s: float = 60.0) -> KfusionServer:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 *self.args], stdout=log, stderr=log, env=self.env, start_new_session=True,
                cwd=Path(__file__).resolve().parents[1])
        try:
            wait_for(lambda: self.proc.poll() is not None or self.health(), timeout_s, "the server's /healthz",
                     0.2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"kfusion serve exited with {self.proc.returncode}:\n{self.log()}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc, timeout_s=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def offline_inner_lip_gaps(x16k: np.ndarray, fps: int = 30) -> np.ndarray:
    """Inner-lip gap (px) of every frame the shipped model gives for 16 kHz float32 audio, offline."""
    from engine.config import EngineConfig
    from engine.face import inner_lip_gap
    from engine.session import ModelSession
    from engine.stream import Stream

    session = ModelSession(None, "cpu")
    stream = Stream(EngineConfig(fps=fps), session.meta)
    frames = stream.process(session, np.asarray(x16k, np.float32)[:, None], final=True)
    return np.array([float(inner_lip_gap(f.landmarks)) for f in frames])


def best_lag_correlation(live: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """Highest Pearson correlation of `live` with any equally long stretch of `ref` (needs len(ref) >= len(live))."""
    if len(ref) < len(live) or len(live) < 10:
        raise ValueError(f"need 10 <= len(live) <= len(ref), got {len(live)} and {len(ref)}")
    best, best_lag = -1.0, 0
    for lag in range(len(ref) - len(live) + 1):
        r = np.corrcoef(live, ref[lag:lag + len(live)])[0, 1]
        if np.isfinite(r) and r > best:
            best, best_lag = float(r), lag
    return best, best_lag
