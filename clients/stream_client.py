"""Stream a microphone or a file (paced in real time) to a kfusion server; show live fps, latency, drops.

Usage: kfusion stream --file speech.wav [--url ws://127.0.0.1:8765/ws] [--save out.npz] [--chunk-ms 20]
       kfusion stream --mic [--seconds 10]
Latency: end-to-end = this client's send of the audio chunk that completed a frame -> the frame's
arrival here; server = the server's receive -> send stamps in the frame header.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from engine import eventloop
from engine import protocol as P

DEFAULT_URL = "ws://127.0.0.1:8765/ws"
DEFAULT_CHUNK_MS = 20
MAX_RETRIES = 10
RETRY_FIRST_WAIT_S = 1.0  # waits double: 1, 2, 4 ... s
REPORT_INTERVAL_S = 1.0


@dataclass(repr=False)
class StreamResult:
    """What one client saw: frames and per-frame latencies (ms)."""

    ready: P.Ready | None = None
    index: list[int] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)  # speech instant of the frame -> its arrival (paced)
    end: P.End | None = None
    error: str | None = None
    close_code: int | None = None
    close_reason: str = ""
    chunks_sent: int = 0

    @property
    def refused_busy(self) -> bool:
        """The server turned the stream away before `ready` with 1013 (full or busy): try again later."""
        return self.ready is None and self.close_code == P.CLOSE_TRY_AGAIN

    def __repr__(self) -> str:  # short: asyncio reprs finished tasks at shutdown, arrays make that slow
        return f"StreamResult({len(self.index)} frames, error={self.error!r})"

    def summary(self) -> str:
        def pct(v, q):
            return float(np.percentile(v, q)) if v else float("nan")

        dropped = self.end.dropped if self.end and self.end.dropped is not None else 0
        return (f"{len(self.index)} frames | e2e p50 {pct(self.e2e_ms, 50):.1f} ms p99 {pct(self.e2e_ms, 99):.1f} ms "
                f"| server p50 {pct(self.server_ms, 50):.2f} ms p99 {pct(self.server_ms, 99):.2f} ms "
                f"| dropped {dropped}")


def _chunks(audio: np.ndarray, chunk_samples: int):
    for i in range(0, len(audio), chunk_samples):
        yield audio[i:i + chunk_samples]


async def stream_audio(url: str, blocks, sample_rate: int, *, fmt: str = "pcm16", fps: int = 30,
                       output: str = "binary", token: str | None = None, pace_s: float | None = None,
                       on_frame=None, open_timeout_s: float = 10.0) -> StreamResult:
    """Send `blocks` ((n,) float32 arrays or encoded bytes, or an async iterator) and collect every frame.

    pace_s: seconds between blocks (real-time pacing from a fixed schedule); None sends as they come.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    res = StreamResult()
    send_t: list[float] = []  # perf_counter of each chunk's send
    async with connect(url, compression=None, max_size=2**20, open_timeout=open_timeout_s) as ws:

        async def receive() -> None:
            try:
                await receive_all()
            except ConnectionClosed:
                pass  # the close code and reason say why (kept below)

        async def receive_all() -> None:
            async for msg in ws:
                now = time.perf_counter()
                if isinstance(msg, bytes):
                    f = P.decode_frame_binary(msg)
                else:
                    m = P.parse_server_message(msg)
                    if isinstance(m, P.Ready):
                        res.ready = m
                        continue
                    if isinstance(m, P.End):
                        res.end = m
                        continue
                    if isinstance(m, P.Error):
                        res.error = m.reason
                        continue
                    f = m
                res.index.append(f.index)
                res.landmarks.append(f.landmarks)
                res.server_ms.append((f.send_time_s - f.recv_time_s) * 1000.0)
                if 0 <= f.chunk < len(send_t):
                    res.e2e_ms.append((now - send_t[f.chunk]) * 1000.0)
                if pace_s and send_t:  # chunk k is sent at t0 + k*pace, as a mic delivers it after recording it
                    spoken = send_t[0] - pace_s + f.audio_time_s
                    res.lag_ms.append((now - spoken) * 1000.0)
                if on_frame is not None:
                    on_frame(f, res)

        rx = asyncio.create_task(receive())
        try:
            await ws.send(P.encode_message(P.Start(sample_rate=sample_rate, format=fmt, fps=fps, output=output,
                                                   token=token)))
            t0 = time.perf_counter()
            if hasattr(blocks, "__aiter__"):
                async for block in blocks:
                    send_t.append(time.perf_counter())
                    await ws.send(P.encode_audio(block, fmt))
            else:
                for k, block in enumerate(blocks):
                    if pace_s:
                        delay = t0 + k * pace_s - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    send_t.append(time.perf_counter())
                    await ws.send(block if isinstance(block, bytes) else P.encode_audio(block, fmt))
            res.chunks_sent = len(send_t)
            await ws.send(P.encode_message(P.End()))
            await rx
        except ConnectionClosed:
            pass
        finally:
            if not rx.done():
                await asyncio.wait_for(rx, 5.0)
        res.close_code, res.close_reason = ws.close_code, ws.close_reason or ""
    if res.error is None and res.close_code not in (P.CLOSE_NORMAL, None):  # closed without an error message
        res.error = f"the server closed the stream ({res.close_code}: {res.close_reason or 'no reason given'})"
    return res


def server_health(port: int, host: str = "127.0.0.1", timeout_s: float = 2.0) -> dict | None:
    """The /healthz JSON of a kfusion server, or None when nothing answers there."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=timeout_s) as r:
            return json.loads(r.read())
    except OSError:
        return None


def save_npz(path: str, res: StreamResult) -> None:
    fps = res.ready.fps if res.ready else 0
    lm = np.stack(res.landmarks).astype(np.float32) if res.landmarks else np.zeros((0, 68, 2), np.float32)
    np.savez(path, landmarks=lm, fps=np.int64(fps), index=np.asarray(res.index, np.int64),
             e2e_ms=np.asarray(res.e2e_ms, np.float32), server_ms=np.asarray(res.server_ms, np.float32))


class LiveReport:
    """Prints frame rate, latency percentiles and drops once per second (to stderr)."""

    def __init__(self) -> None:
        self.t_last = time.perf_counter()
        self.n_last = 0

    def __call__(self, f: P.FrameMessage, res: StreamResult) -> None:
        now = time.perf_counter()
        if now - self.t_last < REPORT_INTERVAL_S:
            return
        rate = (len(res.index) - self.n_last) / (now - self.t_last)
        e2e = res.e2e_ms[-300:] or [float("nan")]
        srv = res.server_ms[-300:] or [float("nan")]
        gaps = (res.index[-1] + 1 - len(res.index)) if res.index else 0
        print(f"\r{rate:5.1f} fps | e2e p50 {np.percentile(e2e, 50):5.1f} p99 {np.percentile(e2e, 99):5.1f} ms "
              f"| server p50 {np.percentile(srv, 50):5.2f} p99 {np.percentile(srv, 99):5.2f} ms "
              f"| dropped {gaps}   ", end="", file=sys.stderr, flush=True)
        self.t_last, self.n_last = now, len(res.index)


async def mic_blocks(device, block_ms: int, seconds: float | None):
    """Blocks from engine.mic.MicSource (float32 mono at the device rate) until `seconds` pass."""
    from engine.mic import MicSource

    async with MicSource(device, block_ms=block_ms) as mic:
        t_end = None if seconds is None else time.perf_counter() + seconds
        async for block in mic:
            yield block
            if t_end is not None and time.perf_counter() >= t_end:
                return


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="audio file to stream, paced in real time")
    src.add_argument("--mic", action="store_true", help="stream this machine's microphone")
    p.add_argument("--mic-device", help="input device index or name")
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--save", help="write the received frames to this .npz")
    p.add_argument("--chunk-ms", type=int, default=DEFAULT_CHUNK_MS, help="audio per message (ms)")
    p.add_argument("--fps", type=int, default=30, choices=(25, 30, 60))
    p.add_argument("--json", action="store_true", help="ask for JSON frames instead of binary")
    p.add_argument("--token")
    p.add_argument("--seconds", type=float, help="stop after this long (mic)")
    p.add_argument("--no-pace", action="store_true", help="send the file as fast as possible")
    p.add_argument("--retries", type=int, default=3,
                   help="when the server is full or busy (1013), try again this many times, waiting 1, 2, 4 ... s")


def run(args) -> int:
    from engine.mic import MicError

    try:
        return _run(args)
    except MicError as exc:
        raise ValueError(f"--mic: {exc}") from exc
    except OSError as exc:  # connection refused, host unreachable
        raise ValueError(f"cannot stream to {args.url}: {exc}") from exc


def _run(args) -> int:
    if not 5 <= args.chunk_ms <= 1000:
        raise ValueError(f"--chunk-ms must be in [5, 1000], got {args.chunk_ms}")
    if not 0 <= args.retries <= MAX_RETRIES:
        raise ValueError(f"--retries must be in [0, {MAX_RETRIES}], got {args.retries}")
    output = "json" if args.json else "binary"
    if args.mic:
        from engine.mic import MicSource

        probe = MicSource(args.mic_device, block_ms=args.chunk_ms)  # resolves the device and its rate

        def attempt():  # a fresh microphone generator for every try
            return stream_audio(args.url, mic_blocks(args.mic_device, args.chunk_ms, args.seconds),
                                probe.sample_rate_hz, fmt="f32", fps=args.fps, output=output, token=args.token,
                                on_frame=LiveReport())
    else:
        from engine.infer import load_audio

        audio, sr = load_audio(args.file)
        mono = audio.mean(axis=1).astype(np.float32)
        chunks = list(_chunks(mono, max(1, sr * args.chunk_ms // 1000)))

        def attempt():
            return stream_audio(args.url, chunks, sr, fmt="pcm16", fps=args.fps, output=output, token=args.token,
                                pace_s=None if args.no_pace else args.chunk_ms / 1000.0, on_frame=LiveReport())
    for k in range(args.retries + 1):
        res = eventloop.run(attempt())  # uvloop when installed
        if not res.refused_busy or k == args.retries:
            break
        wait_s = RETRY_FIRST_WAIT_S * 2 ** k
        print(f"server full or busy ({res.close_reason}); trying again in {wait_s:g} s", file=sys.stderr)
        time.sleep(wait_s)
    print(file=sys.stderr)
    print(res.summary())
    if res.error:
        print(f"server error: {res.error} (close code {res.close_code})", file=sys.stderr)
    if args.save:
        save_npz(args.save, res)
        print(f"saved {len(res.index)} frames to {args.save}")
    return 0 if res.error is None else 1
