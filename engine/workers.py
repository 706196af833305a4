"""`kfusion serve --workers N`: N server processes sharing one port through SO_REUSEPORT, one supervisor.

Usage: kfusion serve --workers 2 --port 8765
Each worker has its own ModelSession, batcher and event loop; the kernel spreads new connections over them.
The parent restarts a worker that dies after it was serving, forwards SIGTERM/SIGINT and waits for all.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import wait

from engine import eventloop
from engine.config import EngineConfig

log = logging.getLogger("kfusion.workers")

WORKER_READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0  # a worker gets this long after SIGTERM to drain before it is killed
POLL_S = 0.5
MAX_RESTARTS_PER_MINUTE = 5
LOG_FORMAT = "%(asctime)s %(levelname)s [pid %(process)d] %(name)s: %(message)s"


def _worker_main(config: EngineConfig, log_level: int, ready) -> None:
    """One worker process: a LandmarkServer on its own event loop until SIGTERM/SIGINT."""
    import asyncio

    from engine.server import LandmarkServer

    logging.basicConfig(level=log_level, format=LOG_FORMAT)

    parent = os.getppid()

    async def orphan_watch(stop: asyncio.Event) -> None:
        while os.getppid() == parent:  # a killed supervisor must not leave workers holding the port
            await asyncio.sleep(POLL_S)
        log.warning("the supervisor (pid %d) is gone; stopping", parent)
        stop.set()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch = loop.create_task(orphan_watch(stop))
        server = LandmarkServer(config)
        await server.start()
        ready.set()
        await stop.wait()
        watch.cancel()
        await server.stop()

    eventloop.run(main(), config.event_loop)


class Supervisor:
    """Starts the workers, restarts one that dies after it was ready, and stops them all on a signal."""

    def __init__(self, config: EngineConfig) -> None:
        if config.workers < 2:
            raise ValueError(f"the supervisor needs workers >= 2, got {config.workers}")
        if config.mic:
            raise ValueError("--mic needs --workers 1: the server microphone is opened by one process")
        self.config = config
        self.ctx = mp.get_context("spawn")  # a clean interpreter per worker: no inherited threads or sessions
        self.procs: list = [None] * config.workers
        self.ready: list = [None] * config.workers
        self.restarts: list[float] = []
        self.stopping = False

    def _spawn(self, slot: int) -> None:
        ready = self.ctx.Event()
        proc = self.ctx.Process(target=_worker_main, name=f"kfusion-worker-{slot}",
                                args=(self.config, logging.getLogger().getEffectiveLevel(), ready))
        proc.start()
        self.procs[slot], self.ready[slot] = proc, ready
        log.info("worker %d started (pid %d)", slot, proc.pid)

    def _on_signal(self, signum, _frame) -> None:
        log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.procs))
        self.stopping = True

    def run(self) -> int:
        """Blocking. 0 after a clean stop on a signal, 1 when a worker could not start or kept dying."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in range(self.config.workers):
                self._spawn(slot)
            return self._watch()
        finally:
            self._stop_all()
            for s, handler in old.items():
                signal.signal(s, handler)

    def _watch(self) -> int:
        t0 = time.monotonic()
        announced = False
        while not self.stopping:
            wait([p.sentinel for p in self.procs], timeout=POLL_S)
            if not announced and all(r.is_set() for r in self.ready):
                log.info("all %d workers serving on port %d (SO_REUSEPORT)", len(self.procs), self.config.port)
                announced = True
            for slot, proc in enumerate(self.procs):
                if self.stopping or proc.is_alive():
                    continue
                if not self.ready[slot].is_set():
                    log.error("worker %d (pid %d) exited with %s before serving; stopping all", slot, proc.pid,
                              proc.exitcode)
                    return 1
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < 60.0] + [now]
                if len(self.restarts) > MAX_RESTARTS_PER_MINUTE:
                    log.error("workers died %d times within a minute; stopping all", len(self.restarts))
                    return 1
                log.warning("worker %d (pid %d) died with exit code %s; restarting it", slot, proc.pid,
                            proc.exitcode)
                self._spawn(slot)
            if not announced and time.monotonic() - t0 > WORKER_READY_TIMEOUT_S:
                log.error("not every worker was serving within %g s; stopping all", WORKER_READY_TIMEOUT_S)
                return 1
        return 0

    def _stop_all(self) -> None:
        live = [p for p in self.procs if p is not None and p.is_alive()]
        for p in live:
            p.terminate()  # SIGTERM: each worker's LandmarkServer closes its connections (1001) and exits
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in live:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker pid %d did not stop within %g s; killing it", p.pid, STOP_TIMEOUT_S)
                p.kill()
                p.join(5)
        log.info("all workers stopped")


def serve_workers(config: EngineConfig) -> int:
    return Supervisor(config).run()
