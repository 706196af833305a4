"""Runs the due model steps of many streams in one ONNX Runtime call (stacked rows), on the event loop.

Streams are grouped by how many steps they have due (usually 1), so every call is a rectangular
(B, T, W, F) batch. A due step waits at most `batch_wait_ms` for other streams to join; the wait is
an asyncio event with a timer, never a sleep-poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.config import EngineConfig
from engine.stream import Frame, Stream

log = logging.getLogger("kfusion.batcher")

MAX_STEPS_PER_CALL = 16  # a stream far behind catches up over several calls


@dataclass
class _Entry:
    stream: Stream
    on_frames: Callable[[list[Frame]], None]
    on_error: Callable[[Exception], None]
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when nothing is pending


class Batcher:
    """One per server: owns the session and the order in which streams' steps are run."""

    def __init__(self, session, config: EngineConfig) -> None:
        self.session = session
        self.wait_s = config.batch_wait_ms / 1000.0
        self.max_batch = config.max_batch
        self._entries: dict[int, _Entry] = {}
        self._ready: dict[int, _Entry] = {}  # streams with due steps, in arrival order
        self._wake = asyncio.Event()
        self._first_ready_t = 0.0
        self._task: asyncio.Task | None = None
        self.calls = 0
        self.rows = 0  # stream-steps run

    # --- membership ---------------------------------------------------------------------------------
    def add(self, stream: Stream, on_frames: Callable[[list[Frame]], None],
            on_error: Callable[[Exception], None]) -> None:
        entry = _Entry(stream, on_frames, on_error)
        entry.idle.set()
        self._entries[id(stream)] = entry

    def remove(self, stream: Stream) -> None:
        self._entries.pop(id(stream), None)
        self._ready.pop(id(stream), None)

    def notify(self, stream: Stream) -> None:
        """Call after stream.push()/finish(): its due steps join the next batch."""
        entry = self._entries.get(id(stream))
        if entry is None or not stream.n_pending:
            return
        entry.idle.clear()
        if not self._ready:
            self._first_ready_t = time.perf_counter()
        self._ready[id(stream)] = entry
        self._wake.set()

    async def drain(self, stream: Stream) -> None:
        """Wait until every due step of `stream` has been run and its frames delivered."""
        entry = self._entries.get(id(stream))
        if entry is not None:
            await entry.idle.wait()

    # --- the loop ------------------------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kfusion-batcher")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            # bounded wait for more streams, unless every stream is already in
            while (self.wait_s > 0 and len(self._ready) < min(len(self._entries), self.max_batch)):
                remaining = self._first_ready_t + self.wait_s - time.perf_counter()
                if remaining <= 0:
                    break
                timer = loop.call_later(remaining, self._wake.set)
                await self._wake.wait()
                self._wake.clear()
                timer.cancel()
            self.run_ready()
            await asyncio.sleep(0)  # let senders drain and readers queue before the next batch

    def run_ready(self) -> None:
        """Run every stream's due steps now (grouped by step count, max_batch rows per call)."""
        ready, self._ready = list(self._ready.values()), {}
        groups: dict[int, list[_Entry]] = {}
        for e in ready:
            if id(e.stream) in self._entries and e.stream.n_pending:
                groups.setdefault(min(e.stream.n_pending, MAX_STEPS_PER_CALL), []).append(e)
        for n, entries in groups.items():
            for i in range(0, len(entries), self.max_batch):
                self._call(entries[i:i + self.max_batch], n)
        for e in ready:  # streams with steps left (caught up partly) go again at once
            if e.stream.n_pending and id(e.stream) in self._entries:
                self.notify(e.stream)
            else:
                e.idle.set()

    def _call(self, entries: list[_Entry], n: int) -> None:
        t0 = time.perf_counter()
        try:
            feats = np.stack([e.stream.pending_feats(n) for e in entries])  # (B, n, W, F)
            identity = np.stack([e.stream.identity for e in entries])  # (B, 68, 2)
            state = np.stack([e.stream.state for e in entries])  # (B, S)
            emotion = np.stack([e.stream.emotion for e in entries])  # (B, E)
            t0 = time.perf_counter()
            landmarks, state_out = self.session.run(feats, identity, state, emotion)
        except Exception as exc:  # onnxruntime raises its own types; fail these streams, not the server
            log.exception("model call failed for a batch of %d streams", len(entries))
            for e in entries:
                self._fail(e, exc)
            return
        model_ms = (time.perf_counter() - t0) * 1000.0
        self.calls += 1
        self.rows += len(entries) * n
        for b, e in enumerate(entries):
            try:
                frames = e.stream.complete(landmarks[b], state_out[b], t0, model_ms)
                if frames:
                    e.on_frames(frames)
            except ValueError as exc:
                self._fail(e, exc)

    def _fail(self, entry: _Entry, exc: Exception) -> None:
        self.remove(entry.stream)
        entry.idle.set()
        entry.on_error(exc)


def silence_batch(session, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs for `batch` silent streams at the start: (feats (B, 1, W, F), identity, state, emotion)."""
    from engine import features

    meta = session.meta
    feats = np.tile(features.SILENCE, (batch, 1, meta.window_hops, 1)).astype(np.float32)
    identity = np.repeat(meta.mean_face[None], batch, 0).astype(np.float32)
    return feats, identity, session.initial_state(batch), session.no_emotion(batch)


def warm_up(session, batch_sizes: tuple[int, ...] = (1, 2, 8)) -> None:
    """Run the model once per batch size (first calls allocate), so the first frames are fast."""
    for b in batch_sizes:
        session.run(*silence_batch(session, b))
