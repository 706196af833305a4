"""One websocket's outbox of landmark frames: bounded, sent in order by its own task, oldest dropped when full.

    conn = Connection(ws, "binary", (), capacity=90, frame_log=deque(maxlen=1000))
    conn.enqueue(frames); await conn.flush(); await conn.stop()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from websockets.exceptions import ConnectionClosed

from engine import protocol as P
from engine.stream import Frame

log = logging.getLogger("kfusion.server")

DRAIN_TIMEOUT_S = 5.0  # flush() gives up after this long


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
        self.task = asyncio.get_running_loop().create_task(self._send_loop())

    def enqueue(self, frames: list[Frame]) -> None:
        now = time.perf_counter()
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
            while self.outbox:
                f, t_enq = self.outbox.popleft()
                queued_ms = (time.perf_counter() - t_enq) * 1000.0  # outbox wait before the socket write
                sent = time.time()
                msg = P.FrameMessage(f.index, f.audio_time_s, f.chunk, f.recv_time_s, sent, f.landmarks, f.controls)
                data = P.encode_frame_binary(msg) if self.output == "binary" else P.encode_frame_json(
                    msg, self.control_names)
                await self.ws.send(data)
                self.sent += 1
                self.frame_log.append((f.recv_time_s, sent, f.stages_ms.get("features", 0.0),
                                       f.stages_ms.get("wait", 0.0), f.stages_ms.get("model", 0.0), queued_ms))
            self._empty.set()

    async def flush(self) -> None:
        await asyncio.wait_for(self._empty.wait(), DRAIN_TIMEOUT_S)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
