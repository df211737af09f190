"""The read-size tuning of mitmproxy's connection I/O (egress/tuning.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bot_bottle_sidecars.egress import tuning
from mitmproxy.proxy import server


def test_install_wraps_handle_connection_once() -> None:
    tuning.install()
    assert tuning.installed()
    wrapped = server.ConnectionHandler.handle_connection
    tuning.install()
    assert server.ConnectionHandler.handle_connection is wrapped
    # The guard still reads the original source through the wrapper.
    tuning.check_compatible()


def test_a_mitmproxy_that_reads_differently_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def handle_connection(self: Any, connection: Any) -> None:
        reader = self.transports[connection].reader
        data = await reader.read(4096)
        del data

    monkeypatch.setattr(server.ConnectionHandler, "handle_connection", handle_connection)
    with pytest.raises(RuntimeError, match=r"reads connections differently.*read\(65535\)"):
        tuning.install()
    assert server.ConnectionHandler.handle_connection is handle_connection


def test_wide_reader_returns_what_is_buffered_up_to_read_size() -> None:
    async def scenario() -> list[int]:
        reader = asyncio.StreamReader()
        tuning.widen(reader)
        assert isinstance(reader, tuning.WideStreamReader)
        reader.feed_data(b"x" * (tuning.READ_SIZE + 1000))
        sizes = [len(await reader.read(tuning.MITM_READ))]
        sizes.append(len(await reader.read(10)))  # other sizes are left alone
        sizes.append(len(await reader.read(tuning.MITM_READ)))
        reader.feed_eof()
        sizes.append(len(await reader.read(tuning.MITM_READ)))
        return sizes

    assert asyncio.run(scenario()) == [tuning.READ_SIZE, 10, 990, 0]


def test_widen_raises_the_pause_threshold_and_leaves_other_readers_alone() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        tuning.widen(reader)
        # asyncio pauses the socket past 2 * limit: bounded, but above one read.
        assert reader._limit == tuning.READ_SIZE  # type: ignore[attr-defined]

        class Other(asyncio.StreamReader):
            pass

        other = Other()
        tuning.widen(other)
        assert type(other) is Other

    asyncio.run(scenario())
