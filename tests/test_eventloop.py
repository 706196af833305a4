"""The event-loop choice: uvloop when installed, asyncio on request, a clear error for anything else."""

import asyncio

import pytest

from engine import eventloop
from engine.config import EngineConfig


async def _loop_type() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_auto_uses_uvloop_when_installed_and_asyncio_on_request():
    pytest.importorskip("uvloop")
    assert eventloop.resolve("auto") == "uvloop"
    assert eventloop.run(_loop_type(), "auto").startswith("uvloop")
    assert eventloop.run(_loop_type(), "asyncio").startswith("asyncio")


def test_unknown_loop_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="auto.*uvloop.*asyncio"):
        eventloop.resolve("trio")
    with pytest.raises(ValueError, match="event_loop"):
        EngineConfig(event_loop="gevent")
