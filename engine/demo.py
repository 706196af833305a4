"""The live demo: start the server, feed it the microphone (or the bundled speech, looped in real time),
print the page URL and a live latency summary; stop after --seconds.

Usage: kfusion demo [--seconds 30] [--source auto|mic|file] [--no-browser]
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from importlib import resources

import numpy as np

from engine import eventloop
from engine import protocol as P
from engine.serve_cli import add_config_arguments, config_from_args
from engine.server import LandmarkServer

log = logging.getLogger("kfusion.demo")

DEMO_SPEECH = "demo_speech.wav"
REPORT_INTERVAL_S = 1.0


def demo_speech_path() -> str:
    return str(resources.files("engine") / "assets" / DEMO_SPEECH)


class LoopedFileSource:
    """Plays an audio file as if it were a microphone: one block every block_ms, looping, timer driven."""

    def __init__(self, path: str, block_ms: int, on_block, on_error=None) -> None:
        from engine.infer import load_audio

        audio, self.sample_rate_hz = load_audio(path)
        self.audio = audio.mean(axis=1).astype(np.float32)
        self.block = max(1, self.sample_rate_hz * block_ms // 1000)
        self.block_s = self.block / self.sample_rate_hz
        self.on_block = on_block
        self.blocks = 0
        self._handle = None
        self._t0 = 0.0

    async def start(self) -> LoopedFileSource:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._handle = loop.call_at(self._t0 + self.block_s, self._tick)
        return self

    def _tick(self) -> None:
        n = len(self.audio)
        start = (self.blocks * self.block) % n
        idx = (start + np.arange(self.block)) % n
        self.on_block(self.audio[idx])
        self.blocks += 1
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(self._t0 + (self.blocks + 1) * self.block_s, self._tick)

    async def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _mic_available(device) -> str | None:
    """None if a microphone can be opened, else why not."""
    from engine.mic import MicError, MicSource

    try:
        MicSource(device)
    except (MicError, ValueError) as exc:
        return str(exc)
    return None


def _maybe_open_browser(url: str) -> None:
    import webbrowser

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("(no display: open the page yourself)")
        return
    try:
        webbrowser.get()
    except webbrowser.Error:
        print("(no browser found: open the page yourself)")
        return
    webbrowser.open(url)


async def _watch(url: str, seconds: float) -> list[float]:
    """Subscribe like the page does and print fps / latency once a second; returns latencies (ms)."""
    from websockets.asyncio.client import connect

    lat: list[float] = []
    srv: list[float] = []
    n_last, t_last, last_index = 0, time.perf_counter(), -1
    gaps = 0
    t_end = time.perf_counter() + seconds
    async with connect(url, compression=None) as ws:
        await ws.send(P.encode_message(P.Subscribe(output="binary")))
        ready = P.parse_server_message(await ws.recv())
        if getattr(ready, "reason", None):
            raise ValueError(f"the server refused the demo subscriber: {ready.reason}")
        while (left := t_end - time.perf_counter()) > 0:
            try:
                msg = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            if not isinstance(msg, bytes):
                continue
            f = P.decode_frame_binary(msg)
            now = time.time()
            lat.append((now - f.recv_time_s) * 1000.0)
            srv.append((f.send_time_s - f.recv_time_s) * 1000.0)
            if last_index >= 0:
                gaps += f.index - last_index - 1
            last_index = f.index
            t = time.perf_counter()
            if t - t_last >= REPORT_INTERVAL_S:
                rate = (len(lat) - n_last) / (t - t_last)
                print(f"\r{rate:5.1f} fps | block arrival -> frame received p50 {np.percentile(lat[-300:], 50):5.2f} "
                      f"p99 {np.percentile(lat[-300:], 99):5.2f} ms | server p50 {np.percentile(srv[-300:], 50):5.2f}"
                      f" ms | missed {gaps}   ", end="", flush=True)
                n_last, t_last = len(lat), t
    print()
    return lat


async def _demo(args) -> int:
    cfg = config_from_args(args, mic=True)
    reason = "--source file" if args.source == "file" else _mic_available(cfg.mic_device)
    factory = None
    if reason is not None:
        if args.source == "mic":
            raise ValueError(f"--source mic: no usable microphone ({reason})")
        path = demo_speech_path()
        print(f"no microphone ({reason}); playing {path} in a loop as if it were one")

        def factory(config, on_block, on_error):
            return LoopedFileSource(path, config.mic_block_ms, on_block, on_error)
    server = LandmarkServer(cfg, mic_factory=factory)
    await server.start()
    try:
        page = f"http://{cfg.host}:{server.port}/"
        print(f"kfusion demo: open {page}  (websocket ws://{cfg.host}:{server.port}/ws)")
        if not args.no_browser:
            _maybe_open_browser(page)
        lat = await _watch(f"ws://{cfg.host}:{server.port}/ws", args.seconds)
    finally:
        await server.stop()
    if lat:
        print(f"demo: {len(lat)} frames in {args.seconds:g} s; block arrival -> frame received "
              f"p50 {np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms "
              f"(plus the model lookahead of {server.session.meta.lookahead_ms:g} ms of audio)")
    else:
        print("demo: no frames arrived", file=sys.stderr)
        return 1
    return 0


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--seconds", type=float, default=30.0, help="stop after this long")
    p.add_argument("--source", default="auto", choices=("auto", "mic", "file"),
                   help="auto: the microphone if there is one, else the bundled speech")
    p.add_argument("--no-browser", action="store_true", help="never open a browser")


def run(args) -> int:
    if args.seconds <= 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    return eventloop.run(_demo(args), args.event_loop)
