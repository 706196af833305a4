"""The websocket landmark server: each client streams its own audio, and/or the server mic is broadcast.

Usage: kfusion serve [--port 8765] [--mic] [--token T] [--allow-origin URL] ...   (docs/protocol.md)
Serves the browser page at / and a health check at /healthz from the same port.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import mimetypes
import os
import signal
import socket
import time
from collections import deque
from importlib import resources

import numpy as np
from websockets.exceptions import ConnectionClosed

from engine import protocol as P
from engine.admission import SAMPLE_S, LoadMeter
from engine.config import EngineConfig
from engine.connection import DRAIN_TIMEOUT_S, Connection, StreamConnection, discard_audio, turn_away
from engine.controls import CONTROL_NAMES
from engine.stream import Frame, Stream

log = logging.getLogger("kfusion.server")

WS_PATH = "/ws"
FRAME_LOG_MAX = 100_000  # per-frame timing records kept for benchmarks (~230 B each: ~23 MiB when full)
# kernel send buffer per connection: small, so a stalled client fills its outbox (and drops the oldest
# frames) within seconds instead of hiding minutes of stale frames in a ~4 MB autotuned buffer
SEND_BUFFER_BYTES = 64 * 1024


class LandmarkServer:
    """Model session + batcher + websocket server (+ optional server microphone)."""

    def __init__(self, config: EngineConfig, session=None, mic_factory=None) -> None:
        """mic_factory(config, on_block, on_error) -> a MicSource-like object (default: engine.mic.MicSource)."""
        self.config = config
        self.session = session
        self.mic_factory = mic_factory
        self.batcher = None
        self.frame_log: deque = deque(maxlen=FRAME_LOG_MAX)
        self.connections: set = set()
        self.streams = 0
        self.subscribers: set[Connection] = set()
        self.mic = None
        self.mic_stream: Stream | None = None
        self._ws_server = None
        self._load_task: asyncio.Task | None = None
        self.load = LoadMeter(config.max_load)
        self._started_t = time.time()
        self.port = config.port

    # --- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        from websockets.asyncio.server import serve

        from engine import features
        from engine.batcher import Batcher, warm_up
        from engine.session import ModelSession

        t0 = time.perf_counter()
        self.config.log()

        def load_model():
            session = self.session or ModelSession(self.config.model_path, self.config.providers,
                                                      self.config.lip_seal_pct)
            warm_up(session)
            return session

        # the feature kernel's load and the ORT session overlap (both spend much of their time outside the GIL)
        self.session, kernel = await asyncio.gather(asyncio.to_thread(load_model), asyncio.to_thread(features.warmup))
        log.info("feature kernel: %s", "ahead-of-time build" if kernel == "aot" else "numba JIT (cache=True)")
        Stream(self.config, self.session.meta, sample_rate_hz=48_000).push(np.zeros((960, 1), np.float32))
        # A full (generation 2) collection walks every tracked object and stops the event loop meanwhile: with
        # the ~42k objects of start-up (modules, ONNX Runtime, websockets) that was a 14-48 ms stall about every
        # 20-30 s under load. Frozen, they are never walked again, and a collection walks only what streams made.
        # Collect first, so no garbage (the warm-up stream's resampler) is frozen with them.
        gc.collect()
        gc.freeze()
        self.batcher = Batcher(self.session, self.config)
        self.batcher.start()
        self._load_task = asyncio.get_running_loop().create_task(self._sample_load(), name="kfusion-load")
        if self.config.mic:
            await self._start_mic()
        self._ws_server = await serve(
            self._handle, self.config.host, self.config.port, process_request=self._http,
            compression=None, max_size=self.config.max_message_bytes, max_queue=self.config.max_queue,
            ping_interval=self.config.ping_interval_s, ping_timeout=self.config.ping_interval_s,
            reuse_port=self.config.workers > 1,  # --workers: the processes share the port (engine/workers.py)
            create_connection=StreamConnection,  # whole binary messages straight to the stream (connection.py)
        )
        self.port = self._ws_server.sockets[0].getsockname()[1]
        log.info("serving ws://%s:%d%s and http://%s:%d/ (ready in %.2f s)", self.config.host, self.port, WS_PATH,
                 self.config.host, self.port, time.perf_counter() - t0)

    async def _sample_load(self) -> None:
        while True:  # on the event loop: the meter reads this thread's CPU time
            self.load.sample(self.streams)
            await asyncio.sleep(SAMPLE_S)

    async def stop(self) -> None:
        if self._load_task is not None:
            self._load_task.cancel()
            await asyncio.gather(self._load_task, return_exceptions=True)
        if self._ws_server is not None:
            self._ws_server.close(close_connections=True)  # 1001 going away
            await self._ws_server.wait_closed()
        if self.mic is not None:
            await self.mic.close()
        if self.batcher is not None:
            await self.batcher.stop()

    async def serve_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("shutting down")
        await self.stop()

    # --- HTTP -------------------------------------------------------------------------------------------
    def health(self) -> dict:
        meta = self.session.meta
        return {"status": "ok", "pid": os.getpid(), "streams": self.streams, "subscribers": len(self.subscribers),
                "model": meta.model_version, "fps": self.config.fps, "lookahead_ms": meta.lookahead_ms,
                "protocol": P.PROTOCOL_VERSION, "uptime_s": round(time.time() - self._started_t, 3),
                "loop_cpu_share": None if (share := self.load.cpu_share()) is None else round(share, 3),
                "max_load": self.config.max_load}

    def _http(self, connection, request):
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            return None  # go on with the websocket handshake
        if path == "/healthz":
            body, ctype = json.dumps(self.health()).encode(), "application/json"
        else:
            name = "index.html" if path == "/" else path.lstrip("/")
            web = resources.files("clients") / "web"
            if "/" in name or name.startswith(".") or not (web / name).is_file():
                return connection.respond(404, f"not found: {path}\n")
            body = (web / name).read_bytes()
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store")])
        return Response(200, "OK", headers, body)

    # --- websocket ----------------------------------------------------------------------------------------
    async def _handle(self, ws) -> None:
        cfg = self.config
        if len(self.connections) >= cfg.max_streams:
            await turn_away(ws, P.CLOSE_TRY_AGAIN, f"server full ({cfg.max_streams} connections), try again later")
            return
        busy = self.load.refusal(len(self.connections))
        if busy:
            log.info("refusing a stream: %s", busy)
            await turn_away(ws, P.CLOSE_TRY_AGAIN, busy)
            return
        origin = ws.request.headers.get("Origin")
        if cfg.allowed_origins and origin is not None and origin not in cfg.allowed_origins:
            await turn_away(ws, P.CLOSE_POLICY, f"origin {origin[:60]} not allowed")
            return
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self.connections.add(ws)
        try:
            await self._session(ws)
        except P.ProtocolError as exc:
            await self._refuse(ws, exc)
        except ConnectionClosed:
            pass  # the client went away: a normal end
        finally:
            self.connections.discard(ws)

    async def _refuse(self, ws, exc: P.ProtocolError) -> None:
        log.info("closing a client: %d %s", exc.code, exc.reason)
        try:
            try:  # a client that reads nothing must not hold this handler: the close then times out itself
                await asyncio.wait_for(ws.send(P.encode_message(P.Error(exc.reason, exc.code))), DRAIN_TIMEOUT_S)
            except TimeoutError:
                log.info("the error message did not drain in %g s; closing anyway", DRAIN_TIMEOUT_S)
            await ws.close(exc.code, exc.close_reason())
        except ConnectionClosed:
            pass

    def _check_token(self, token: str | None) -> None:
        expected = self.config.token
        if expected and not (token and hmac.compare_digest(token.encode(), expected.encode())):
            raise P.ProtocolError(P.CLOSE_POLICY, "missing or wrong token")

    async def _session(self, ws) -> None:
        first = await ws.recv()
        if isinstance(first, bytes):
            raise P.ProtocolError(P.CLOSE_UNSUPPORTED, "binary audio before start; send a start message first")
        msg = P.parse_client_message(first)
        if isinstance(msg, P.End):
            raise P.ProtocolError(P.CLOSE_UNSUPPORTED, "end before start")
        self._check_token(msg.token)
        if isinstance(msg, P.Subscribe):
            await self._subscriber(ws, msg)
        else:
            await self._client_stream(ws, msg)

    def _ready(self, output: str, source: str, fps: int, latency_ms: float, controls: bool) -> str:
        m = self.session.meta
        return P.encode_message(P.Ready(
            fps=fps, model_fps=m.fps, lookahead_ms=m.lookahead_ms, latency_ms=round(latency_ms, 3),
            model={"version": m.model_version, "config_hash": m.config_hash, "layout": m.landmark_layout,
                   "frame": m.coordinate_frame, "emotions": list(m.emotions)},
            controls=CONTROL_NAMES if controls else (), output=output, source=source))

    def _new_stream(self, msg: P.Start) -> Stream:
        meta = self.session.meta
        emotion = None
        if msg.emotion is not None:
            if msg.emotion not in meta.emotions:
                raise P.ProtocolError(P.CLOSE_INVALID, f"emotion must be one of {list(meta.emotions)}, got "
                                      f"{msg.emotion[:30]!r}")
            emotion = np.zeros(meta.n_emotions, np.float32)
            emotion[meta.emotions.index(msg.emotion)] = 1.0
        try:
            return Stream(self.config, meta, sample_rate_hz=msg.sample_rate, channels=msg.channels,
                          sample_format=msg.format, identity=None if msg.identity is None else np.array(msg.identity),
                          emotion=emotion, fps=msg.fps, smoothing=msg.smoothing, controls=msg.controls)
        except ValueError as exc:
            raise P.ProtocolError(P.CLOSE_INVALID, str(exc)) from exc

    async def _client_stream(self, ws, msg: P.Start) -> None:
        stream = self._new_stream(msg)
        conn = Connection(ws, msg.output, CONTROL_NAMES if msg.controls else (), self.config.outbox_frames,
                          self.frame_log)
        failure: list[Exception] = []
        chunk = 0  # audio messages taken so far

        def fail(err: P.ProtocolError) -> None:
            failure.append(err)
            ws.audio_sink = discard_audio  # audio after the failure is dropped as it comes, never queued (see turn_away)
            asyncio.get_running_loop().create_task(self._refuse(ws, err))

        def on_error(exc: Exception) -> None:  # the batcher could not run this stream's steps
            fail(P.ProtocolError(P.CLOSE_INTERNAL, f"stream failed: {exc}"))

        def take_audio(data: bytes) -> None:
            """One binary message: validate, push, queue its due steps. ProtocolError 1007 for bad audio."""
            nonlocal chunk
            recv = time.time()
            pcm = P.decode_audio(data, msg.format, msg.channels)
            try:
                stream.push(pcm, chunk, recv)
            except ValueError as exc:
                raise P.ProtocolError(P.CLOSE_INVALID, f"bad audio: {exc}") from exc
            chunk += 1
            self.batcher.notify(stream)

        def audio_sink(data: bytes) -> None:  # the direct path: called from the connection's data_received
            if failure:
                return
            try:
                take_audio(data)
            except P.ProtocolError as exc:
                fail(exc)
            except Exception as exc:  # a bug must end this stream loudly, never the connection's reader
                log.exception("taking audio failed")
                fail(P.ProtocolError(P.CLOSE_INTERNAL, f"stream failed: {exc}"))

        self.batcher.add(stream, conn.enqueue, on_error)
        self.streams += 1
        try:
            await ws.send(self._ready(msg.output, "client", stream.fps, stream.latency_ms, msg.controls))
            ws.audio_sink = audio_sink  # ws is a StreamConnection: serve(create_connection=...) above
            async for data in ws:  # text messages; binary ones too once a fragmented message turned the direct path off
                recv = time.time()
                if failure:
                    return
                if isinstance(data, bytes):
                    take_audio(data)
                    if stream.n_pending > 1:  # a client that floods audio must not starve the others
                        await asyncio.sleep(0)
                    continue
                ctl = P.parse_client_message(data)
                if not isinstance(ctl, P.End):
                    raise P.ProtocolError(P.CLOSE_INVALID, f"'{ctl.type}' is not allowed after start")
                ws.audio_sink = None  # audio after `end` is not taken
                stream.finish(max(chunk - 1, 0), recv)
                self.batcher.notify(stream)
                await self.batcher.drain(stream)
                try:
                    await conn.flush()
                except TimeoutError as exc:  # the client stopped reading: say so instead of a bare 1011
                    raise P.ProtocolError(P.CLOSE_POLICY, f"client read no frames for {DRAIN_TIMEOUT_S:g} s "
                                          "after end") from exc
                await ws.send(P.encode_message(P.End(frames=conn.sent, dropped=conn.dropped)))
                await ws.close(P.CLOSE_NORMAL, "end of stream")
                return
        finally:
            ws.audio_sink = None
            self.batcher.remove(stream)
            self.streams -= 1
            await conn.stop()

    async def _subscriber(self, ws, msg: P.Subscribe) -> None:
        if self.mic_stream is None:
            raise P.ProtocolError(P.CLOSE_UNSUPPORTED, "this server has no microphone (start it with --mic)")
        s = self.mic_stream
        conn = Connection(ws, msg.output, CONTROL_NAMES if s.with_controls else (), self.config.outbox_frames,
                          self.frame_log)
        await ws.send(self._ready(msg.output, "mic", s.fps, s.latency_ms, s.with_controls))
        self.subscribers.add(conn)
        try:
            async for data in ws:  # subscribers only listen; `end` or anything else ends the subscription
                if isinstance(data, bytes):
                    raise P.ProtocolError(P.CLOSE_UNSUPPORTED, "a subscriber cannot send audio")
                if isinstance(P.parse_client_message(data), P.End):
                    await ws.close(P.CLOSE_NORMAL, "unsubscribed")
                    return
        finally:
            self.subscribers.discard(conn)
            await conn.stop()

    # --- server microphone ------------------------------------------------------------------------------
    async def _start_mic(self) -> None:
        factory = self.mic_factory
        if factory is None:
            from engine.mic import MicSource

            def factory(cfg, on_block, on_error):
                return MicSource.from_config(cfg, on_block=on_block, on_error=on_error)

        self.mic = factory(self.config, self._on_mic_block, self._on_mic_error)
        self.mic_stream = Stream(self.config, self.session.meta, sample_rate_hz=self.mic.sample_rate_hz)
        self._mic_chunk = 0
        self.batcher.add(self.mic_stream, self._broadcast, self._on_mic_error)
        await self.mic.start()

    def _on_mic_block(self, block: np.ndarray) -> None:
        if self.mic_stream is None:
            return
        self.mic_stream.push(block[:, None], self._mic_chunk, time.time())
        self._mic_chunk += 1
        self.batcher.notify(self.mic_stream)

    def _broadcast(self, frames: list[Frame]) -> None:
        for conn in list(self.subscribers):
            conn.enqueue(frames)

    def _on_mic_error(self, exc: Exception) -> None:
        if self.mic_stream is None:
            return
        self.batcher.remove(self.mic_stream)
        log.error("server microphone stopped: %s; client streams carry on", exc)
        for conn in list(self.subscribers):
            asyncio.get_running_loop().create_task(
                self._refuse(conn.ws, P.ProtocolError(P.CLOSE_INTERNAL, f"server microphone failed: {exc}")))
        self.mic_stream = None
