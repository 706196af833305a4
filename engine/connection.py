"""One websocket's path for audio in and frames out: the server's connection class, and its frame outbox.

    serve(handler, create_connection=StreamConnection, ...); ws.audio_sink = take_audio   # binary messages
    conn = Connection(ws, "binary", (), capacity=90, frame_log=deque(maxlen=1000))
    conn.enqueue(frames); await conn.flush(); await conn.stop()

Live audio is many small messages (50 a second per stream), so the common case skips the per-message
queue and task switches of websockets' `recv()`/`send()`: a whole binary message goes straight from the
connection's `data_received` to its `audio_sink`, and a frame is written at once when nothing is queued
and the socket is keeping up. Anything else (text messages, fragmented messages, a slow reader) takes
the ordinary path, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.protocol import State

from engine import protocol as P
from engine.stream import Frame

log = logging.getLogger("kfusion.server")

DRAIN_TIMEOUT_S = 5.0  # flush() gives up after this long


class StreamConnection(ServerConnection):
    """websockets' server connection, plus a direct path for whole binary messages and for writes."""

    audio_sink = None  # callable(bytes) -> None; set by the handler once the stream has started

    def process_event(self, event) -> None:
        if self.audio_sink is not None and event.opcode is Opcode.BINARY:
            if event.fin:
                self.audio_sink(event.data)
                return
            self.audio_sink = None  # a fragmented message: from here on everything keeps to the queue, in order
        super().process_event(event)

    def can_write_now(self) -> bool:
        """Open, and the socket took everything written so far (nothing waits in user space)."""
        return (self.protocol.state is State.OPEN and not self.transport.is_closing()
                and not self.transport.get_write_buffer_size())

    def write_now(self, data: bytes | str) -> None:
        if isinstance(data, str):
            self.protocol.send_text(data.encode())
        else:
            self.protocol.send_binary(data)
        self.send_data()


def discard_audio(data: bytes) -> None:
    """The audio sink of a connection being closed: its audio is dropped as it comes."""


async def turn_away(ws: StreamConnection, code: int, reason: str) -> None:
    """Close a connection the server will not serve. Audio it already sent is dropped as it comes: queued, a
    client that sent audio straight after `start` would fill websockets' receive queue, which stops the
    reading, so its close reply would sit unread behind the audio and the close would wait out its 10 s
    timeout."""
    ws.audio_sink = discard_audio
    await ws.close(code, reason)


class Connection:
    """One websocket's outbox: bounded, oldest frames dropped (and counted) for a slow consumer."""

    def __init__(self, ws, output: str, control_names: tuple[str, ...], capacity: int, frame_log: deque) -> None:
        self.ws, self.output, self.control_names = ws, output, control_names
        self.capacity, self.frame_log = capacity, frame_log
        self.outbox: deque[tuple[Frame, float]] = deque()
        self.dropped = self.sent = 0
        self._more = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._sending = False  # the send task holds frames taken from the outbox
        self._direct = isinstance(ws, StreamConnection)
        self.task = asyncio.get_running_loop().create_task(self._send_loop())

    def enqueue(self, frames: list[Frame]) -> None:
        now = time.perf_counter()
        if self._direct and not self.outbox and not self._sending and self.ws.can_write_now():
            try:  # nothing queued and the socket keeps up: write now, in order, without the send task
                for f in frames:
                    self._write(f, now)
            except Exception:  # a bug here must end this connection loudly, never the batcher that called us
                log.exception("writing frames failed; closing this connection")
                self._direct = False
                asyncio.get_running_loop().create_task(
                    self.ws.close(P.CLOSE_INTERNAL, "internal error while sending frames"))
            return
        for f in frames:
            if len(self.outbox) >= self.capacity:
                self.outbox.popleft()
                self.dropped += 1
            self.outbox.append((f, now))
        self._empty.clear()
        self._more.set()

    async def _send_loop(self) -> None:
        try:
            await self._send_frames()
        except ConnectionClosed:
            pass  # the client went away; its handler ends the session
        except Exception:  # a bug here must end this connection loudly, never hang it or touch others
            log.exception("sending frames failed; closing this connection")
            await self.ws.close(P.CLOSE_INTERNAL, "internal error while sending frames")

    async def _send_frames(self) -> None:
        while True:
            await self._more.wait()
            self._more.clear()
            self._sending = True
            while self.outbox:
                f, t_enq = self.outbox.popleft()
                data, record = self._encode(f, t_enq)
                await self.ws.send(data)
                self.sent += 1
                self.frame_log.append(record)
            self._sending = False
            self._empty.set()

    def _encode(self, f: Frame, t_enq: float) -> tuple[bytes | str, tuple]:
        """The frame's message, and its timing record for the benchmarks."""
        queued_ms = (time.perf_counter() - t_enq) * 1000.0  # outbox wait before the socket write
        sent = time.time()
        if self.output == "binary":
            data = P.pack_frame(f.index, f.audio_time_s, f.chunk, f.recv_time_s, sent, f.landmarks, f.controls)
        else:
            msg = P.FrameMessage(f.index, f.audio_time_s, f.chunk, f.recv_time_s, sent, f.landmarks, f.controls)
            data = P.encode_frame_json(msg, self.control_names)
        return data, (f.recv_time_s, sent, f.stages_ms.get("features", 0.0), f.stages_ms.get("wait", 0.0),
                      f.stages_ms.get("model", 0.0), queued_ms)

    def _write(self, f: Frame, t_enq: float) -> None:
        data, record = self._encode(f, t_enq)
        self.ws.write_now(data)
        self.sent += 1
        self.frame_log.append(record)

    async def flush(self) -> None:
        await asyncio.wait_for(self._empty.wait(), DRAIN_TIMEOUT_S)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
