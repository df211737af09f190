"""The read-size tuning of mitmproxy's connection I/O (egress/tuning.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from bot_bottle_sidecars.egress import tuning
from mitmproxy.proxy import server

from bot_bottle.egress.render import RouteSpec

from .conftest import Env


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


def test_the_daemon_refuses_to_start_on_a_mitmproxy_that_reads_differently(
    egress_env: Env, tmp_path: Path
) -> None:
    # A stand-in for a mitmproxy upgrade: sitecustomize swaps the read loop
    # for one that reads another size before the daemon starts.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            from mitmproxy.proxy import server

            async def handle_connection(self, connection):
                reader = self.transports[connection].reader
                while await reader.read(1 << 20):
                    pass

            server.ConnectionHandler.handle_connection = handle_connection
            """
        )
    )
    cfg = tmp_path / "egress.json"
    _, env = egress_env.write_config(cfg, [RouteSpec("api.upstream.test")])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot_bottle_sidecars.egress",
            *("--config", str(cfg), "--confdir", str(egress_env.ca.confdir)),
            *("--listen-host", "127.0.0.1", "--listen-port", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env, "PYTHONPATH": str(site)},
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stdout + r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert '"egress failed to start"' in line and "reads connections differently" in line


def test_writes_of_one_event_go_out_together_and_in_order() -> None:
    async def scenario() -> list[bytes]:
        got: list[bytes] = []
        done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while chunk := await reader.read(1 << 20):
                got.append(chunk)
            done.set()
            writer.close()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        tuning.coalesce(writer)
        tuning.coalesce(writer)  # once only
        writer.write(b"head")
        writer.write(b"-body")
        await asyncio.sleep(0.05)
        assert got == []  # nothing sent before the event is done
        getattr(writer, tuning._COALESCE).flush()
        await asyncio.sleep(0.05)
        writer.write(b"tail")
        big = b"x" * tuning.COALESCE_BELOW
        writer.write(big)  # bulk: what is pending, then it, at once
        await asyncio.sleep(0.05)
        writer.write(b"last")
        writer.write_eof()  # flushes first
        await asyncio.wait_for(done.wait(), 5)
        writer.close()
        srv.close()
        return got

    got = asyncio.run(scenario())
    assert got[0] == b"head-body"
    assert b"".join(got) == b"head-body" + b"tail" + b"x" * tuning.COALESCE_BELOW + b"last"


def test_a_mitmproxy_that_writes_elsewhere_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def server_event(self: Any, event: Any) -> None:
        for command in self.layer.handle_event(event):
            self.transports[command.connection].writer.send(command.data)

    monkeypatch.setattr(server.ConnectionHandler, "server_event", server_event)
    with pytest.raises(RuntimeError, match=r"writer\.write\(command\.data\)"):
        tuning.check_compatible()
