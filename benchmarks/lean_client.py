"""A lean load-generator process: many real websocket streams on websockets' sans-I/O client protocol.

Used by `kfusion bench capacity --client lean` (benchmarks/load_clients.py). Each stream is a plain asyncio
Protocol driving websockets' ClientProtocol over its own TCP connection: the same handshake, framing and
masking as any websockets client, and the same protocol messages as `kfusion stream`, but no task, future
or queue per message, and each chunk is sent from a timer callback. The load clients share the server's
two vCPUs, so every millisecond they spend is one the server does not get. All streams connect and get
`ready` first; then each starts its audio at its own offset within one chunk, so the measurement holds
streaming only, not a burst of handshakes (which alone delayed the first frames by up to 70 ms at 56
streams opened within 20 ms).
"""

from __future__ import annotations

import asyncio
import gc
import time

import numpy as np
from websockets.protocol import State

from engine import protocol as P

HANDSHAKE_TIMEOUT_S = 60.0
END_TIMEOUT_S = 30.0  # after the last chunk: the server's `end`, close frame and TCP close


class LeanStream(asyncio.Protocol):
    """One stream: connect, `start`, wait for `ready`; then (begin()) chunks paced in real time, `end`."""

    def __init__(self, url: str, chunks: list[bytes], sample_rate: int, pace_s: float, ready: asyncio.Future,
                 done: asyncio.Future):
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.proto = ClientProtocol(parse_uri(url), max_size=2**20)
        self.chunks, self.sample_rate, self.pace_s, self.ready, self.done = chunks, sample_rate, pace_s, ready, done
        self.loop = asyncio.get_running_loop()
        self.transport = None
        self.t0 = 0.0
        self.send_t: list[float] = []
        self.res = {"frames": 0, "e2e": [], "lag": [], "server": [], "dropped": 0, "error": None,
                    "expected": None, "close": None}

    # --- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.proto.send_request(self.proto.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.proto.receive_data(data)
        now = time.perf_counter()
        for ev in self.proto.events_received():
            if not hasattr(ev, "opcode"):  # the handshake's HTTP response
                if self.proto.handshake_exc is not None:
                    self._finish(f"handshake failed: {self.proto.handshake_exc}")
                    return
                if self.proto.state is State.OPEN:  # not when the server's close came in the same read (1013)
                    self.proto.send_text(P.encode_message(P.Start(sample_rate=self.sample_rate)).encode())
            elif ev.opcode.name == "BINARY":
                self._frame(ev.data, now)
            elif ev.opcode.name == "TEXT":
                self._message(ev.data.decode())
        self._flush()

    def eof_received(self) -> None:
        self.proto.receive_eof()
        self._flush()

    def connection_lost(self, exc) -> None:
        self.res["close"] = self.proto.close_code
        self._finish(None if exc is None else f"{type(exc).__name__}: {exc}")

    # --- the stream ---------------------------------------------------------------------------------
    def begin(self, t0: float) -> None:
        """Send chunk 0 at perf_counter time t0 and the rest on the schedule t0 + k * pace_s."""
        self.t0 = t0
        self.loop.call_later(max(0.0, t0 - time.perf_counter()), self._send_chunk, 0)

    def _send_chunk(self, k: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.send_t.append(time.perf_counter())
        self.proto.send_binary(self.chunks[k])
        if k + 1 < len(self.chunks):  # chunk k+1 at t0 + (k+1) pace, as a microphone delivers it
            self.loop.call_at(self.loop.time() + max(0.0, self.t0 + (k + 1) * self.pace_s - time.perf_counter()),
                              self._send_chunk, k + 1)
        else:
            self.proto.send_text(P.encode_message(P.End()).encode())
            self.loop.call_later(END_TIMEOUT_S, self._give_up)
        self._flush()

    def _frame(self, data: bytes, now: float) -> None:
        try:
            _, _, chunk, audio_t, recv, sent = P.decode_frame_header(data)
        except P.ProtocolError as exc:
            self.res["error"] = str(exc)
            return
        self.res["frames"] += 1
        self.res["server"].append((sent - recv) * 1000.0)
        if 0 <= chunk < len(self.send_t):
            self.res["e2e"].append((now - self.send_t[chunk]) * 1000.0)
        self.res["lag"].append((now - (self.t0 - self.pace_s + audio_t)) * 1000.0)  # as stream_audio's lag

    def _message(self, text: str) -> None:
        m = P.parse_server_message(text)
        if isinstance(m, P.Ready):
            if not self.ready.done():
                self.ready.set_result(True)
        elif isinstance(m, P.End):
            self.res["expected"], self.res["dropped"] = m.frames, m.dropped or 0
        elif isinstance(m, P.Error):
            self.res["error"] = m.reason

    def _give_up(self) -> None:
        if not self.done.done():
            self.res["error"] = self.res["error"] or f"no close within {END_TIMEOUT_S:g} s of the last chunk"
            self.transport.abort()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.proto.data_to_send():
            if data:
                self.transport.write(data)
            else:  # websockets asks for the write side to be closed (after the close handshake)
                if self.transport.can_write_eof():
                    self.transport.write_eof()

    def _finish(self, error: str | None) -> None:
        if error and not self.res["error"]:
            self.res["error"] = error
        if not self.ready.done():
            self.ready.set_result(False)
        if not self.done.done():
            self.done.set_result(self.res)


async def run_streams(url: str, clips: list[list[bytes]], sample_rate: int, pace_s: float,
                      offsets: np.ndarray) -> list[dict]:
    """Connect one LeanStream per clip and wait for every `ready`; then start stream k's audio offsets[k]
    seconds after a common instant, run them all, and return their result dicts."""
    from websockets.uri import parse_uri

    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    streams: list[LeanStream | None] = [None] * len(clips)
    dones = [loop.create_future() for _ in clips]

    async def open_one(k: int) -> bool:
        ready = loop.create_future()
        try:
            _, streams[k] = await asyncio.wait_for(loop.create_connection(
                lambda: LeanStream(url, clips[k], sample_rate, pace_s, ready, dones[k]), uri.host, uri.port),
                HANDSHAKE_TIMEOUT_S)
            return await asyncio.wait_for(ready, HANDSHAKE_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            if not dones[k].done():
                dones[k].set_result({"error": f"{type(exc).__name__}: {exc}"})
            return False

    opened = await asyncio.gather(*(open_one(k) for k in range(len(clips))))
    t_go = time.perf_counter() + 0.05
    for k, ok in enumerate(opened):
        if ok:
            streams[k].begin(t_go + float(offsets[k]))
    return list(await asyncio.gather(*dones))


def client_proc(url: str, n_streams: int, seconds: float, chunk_ms: int, seed: int, out_q, ready, go) -> None:
    """One lean client process (the same audio, offsets and result dicts as bench_latency._client_proc)."""
    from benchmarks.bench_latency import prepare_clips
    from engine import eventloop

    clips, sr, offsets = prepare_clips(n_streams, seconds, chunk_ms, seed)
    gc.collect()  # as the server does: freeze what is alive now, so a full collection mid-run walks only
    gc.freeze()  # the streams' objects (a short pause)
    ready.release()
    go.wait()
    cpu0 = time.process_time()
    out = eventloop.run(run_streams(url, clips, sr, chunk_ms / 1000.0, offsets))
    out_q.put({"streams": out, "cpu_s": time.process_time() - cpu0})


async def run_arrivals(url: str, clips: list[list[bytes]], sample_rate: int, pace_s: float, per_wave: int,
                       gap_s: float) -> list[dict]:
    """Streams that arrive over time: `per_wave` new connections every gap_s seconds (len(clips) in all), each
    starting its audio as soon as it is ready. Returns their result dicts, each with `admitted` (got `ready`);
    a refused one holds the server's close code in `close`."""
    from websockets.uri import parse_uri

    uri = parse_uri(url)
    loop = asyncio.get_running_loop()

    async def one(k: int) -> dict:
        ready, done = loop.create_future(), loop.create_future()
        try:
            _, stream = await asyncio.wait_for(loop.create_connection(
                lambda: LeanStream(url, clips[k], sample_rate, pace_s, ready, done), uri.host, uri.port),
                HANDSHAKE_TIMEOUT_S)
            admitted = await asyncio.wait_for(ready, HANDSHAKE_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}", "admitted": False, "close": None}
        if admitted:
            stream.begin(time.perf_counter())
        res = await done
        return {**res, "admitted": bool(admitted)}

    tasks = []
    for first in range(0, len(clips), per_wave):
        tasks += [asyncio.ensure_future(one(k)) for k in range(first, min(first + per_wave, len(clips)))]
        await asyncio.sleep(gap_s)
    return list(await asyncio.gather(*tasks))


def arrivals_proc(url: str, n_streams: int, seconds: float, chunk_ms: int, seed: int, out_q, ready, go,
                  per_wave: int = 2, gap_s: float = 1.0) -> None:
    """One client process of `kfusion bench admission`: n_streams arriving per_wave every gap_s seconds."""
    from benchmarks.bench_latency import prepare_clips
    from engine import eventloop

    clips, sr, _ = prepare_clips(n_streams, seconds, chunk_ms, seed)
    gc.collect()
    gc.freeze()
    ready.release()
    go.wait()
    cpu0 = time.process_time()
    out = eventloop.run(run_arrivals(url, clips, sr, chunk_ms / 1000.0, per_wave, gap_s))
    out_q.put({"streams": out, "cpu_s": time.process_time() - cpu0})
