"""Admission by load: refuse a new stream (1013, try again) when it would push the event loop past a share of a core.

    meter = LoadMeter(max_load=0.85)
    meter.sample(streams)                 # every SAMPLE_S, on the event loop
    why = meter.refusal(connections)      # None: admit; else the close reason

One server process runs every stream on one event-loop thread (the model runs on that thread too), so
the thread's CPU time is the process's capacity. Past one core nobody is served on time: every frame of
every stream comes late. With `--max-load` set, the server measures what its streams cost and turns away
the stream that would cross the limit, so the ones already running keep their timing. A client told 1013
retries later, or on another worker (`--workers`) or machine.
"""

from __future__ import annotations

import time
from collections import deque

SAMPLE_S = 0.5  # how often the loop's CPU time is read
WINDOW_S = 3.0  # the load is measured over this much recent time
MIN_WINDOW_S = 1.0  # no verdict from less than this
MIN_STREAMS = 8  # below this many streams on average, the cost per stream is mostly fixed costs: admit


class LoadMeter:
    """The event-loop thread's busy share of one core over the last WINDOW_S, and the streams it carried."""

    def __init__(self, max_load: float = 0.0, clock=time.perf_counter, cpu_clock=time.thread_time,
                 min_streams: int = MIN_STREAMS) -> None:
        """max_load: the share of one core (0..1] past which new streams are refused; 0 = measure only."""
        if not 0.0 <= max_load <= 1.0:
            raise ValueError(f"max_load must be a share of one core in [0, 1] (0 = off), got {max_load}")
        self.max_load = max_load
        self.min_streams = min_streams
        self._clock, self._cpu_clock = clock, cpu_clock
        self._samples: deque[tuple[float, float, int]] = deque()  # (wall s, thread cpu s, streams)

    def sample(self, streams: int) -> None:
        """Record the loop's CPU time now; call from the event-loop thread."""
        now = self._clock()
        self._samples.append((now, self._cpu_clock(), streams))
        while len(self._samples) > 2 and self._samples[1][0] <= now - WINDOW_S:
            self._samples.popleft()

    def cpu_share(self) -> float | None:
        """Busy share of one core over the window (None until MIN_WINDOW_S has been seen)."""
        if len(self._samples) < 2:
            return None
        (t0, c0, _), (t1, c1, _) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 - t0 >= MIN_WINDOW_S else None

    def mean_streams(self) -> float:
        """Streams over the window, each interval weighted by its length and counted as its end's reading."""
        pts = self._samples
        span = pts[-1][0] - pts[0][0] if len(pts) > 1 else 0.0
        if span <= 0:
            return 0.0
        return sum((b[0] - a[0]) * b[2] for a, b in zip(pts, list(pts)[1:])) / span

    def refusal(self, connections: int) -> str | None:
        """None to admit one more connection beside `connections` open ones; else why not (a close reason).

        The cost of one stream is the window's CPU share over the streams it carried on average; a new one
        is refused when that cost times (connections + 1) passes max_load."""
        if not self.max_load:
            return None
        share, carried = self.cpu_share(), self.mean_streams()
        if share is None or carried < self.min_streams:
            return None
        projected = share / carried * (connections + 1)
        if projected <= self.max_load:
            return None
        return (f"server busy: {share:.0%} of a core for {carried:.0f} streams, one more would pass its "
                f"{self.max_load:.0%} limit; try again later")
