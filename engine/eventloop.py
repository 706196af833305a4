"""Which asyncio event loop runs the server and clients: uvloop (libuv, faster sockets) when installed."""

from __future__ import annotations

import asyncio

EVENT_LOOPS = ("auto", "uvloop", "asyncio")  # auto: uvloop when it imports, else asyncio's own loop


def resolve(kind: str = "auto") -> str:
    """The loop `kind` will really use ('uvloop' or 'asyncio'); ValueError for an unknown or missing one."""
    if kind not in EVENT_LOOPS:
        raise ValueError(f"event loop must be one of {EVENT_LOOPS}, got {kind!r}")
    if kind == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        if kind == "uvloop":
            raise ValueError("event loop 'uvloop' needs the uvloop package: pip install uvloop "
                             "(Linux and macOS only)") from exc
        return "asyncio"
    return "uvloop"


def run(coro, kind: str = "auto"):
    """asyncio.run(coro) on the chosen loop."""
    if resolve(kind) == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)
