"""Chapter execution: the kernel client's sliced waits (see repro.chapters._poll_in_slices)."""
import asyncio
import time
from queue import Empty

import pytest
from jupyter_client.channels import AsyncZMQSocketChannel
from repro.tools import execution as chapters


@pytest.fixture
def fake_get_msg(monkeypatch):
    """Replace the client's poll by a recorder that finds a message only on its third call."""
    calls = []

    async def get_msg(self, timeout=None):
        calls.append(timeout)
        if timeout is None or timeout > 1:
            raise AssertionError(f"one long poll ({timeout} s): a missed wake-up would stall for all of it")
        if len(calls) < 3:
            await asyncio.sleep(timeout)
            raise Empty
        return {"msg_type": "execute_reply"}

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", get_msg)
    chapters._poll_in_slices()
    return calls


def test_a_long_wait_is_made_of_short_polls(fake_get_msg, monkeypatch):
    monkeypatch.setattr(chapters, "_POLL_SLICE_S", 0.05)
    msg = asyncio.run(AsyncZMQSocketChannel.get_msg(None, timeout=600))
    assert msg["msg_type"] == "execute_reply"
    assert len(fake_get_msg) == 3 and max(fake_get_msg) <= 0.05  # a missed wake-up costs one slice, not 600 s


def test_an_unbounded_wait_is_sliced_too(fake_get_msg, monkeypatch):
    monkeypatch.setattr(chapters, "_POLL_SLICE_S", 0.05)
    assert asyncio.run(AsyncZMQSocketChannel.get_msg(None))["msg_type"] == "execute_reply"
    assert fake_get_msg[:2] == [0.05, 0.05]


def test_the_timeout_still_holds(fake_get_msg, monkeypatch):
    monkeypatch.setattr(chapters, "_POLL_SLICE_S", 1.0)
    t0 = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(AsyncZMQSocketChannel.get_msg(None, timeout=0.2))
    assert 0.15 < time.monotonic() - t0 < 0.9
    assert len(fake_get_msg) <= 2


def test_slicing_is_applied_once(fake_get_msg):
    patched = AsyncZMQSocketChannel.get_msg
    chapters._poll_in_slices()
    assert AsyncZMQSocketChannel.get_msg is patched
