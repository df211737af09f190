"""A bot-bottle home with one running bottle, and a REAL egress daemon
(``python -m bot_bottle_sidecars.egress``, mitmproxy) standing in for that
bottle's sidecar: the console changes its routes through the same file,
SIGHUP and introspection request a Docker bottle uses. Its upstream is a
local HTTPS server on 127.0.0.1 (``*.upstream.test`` pinned there)."""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bot_bottle_testkit.egress import (
    EgressProcess,
    LocalEgressControl,
    LocalUpstream,
    make_test_pki,
    start_egress,
)

from bot_bottle.egress.ca import BottleCA, generate_bottle_ca
from bot_bottle.egress.render import RouteSpec, render_egress_config
from bot_bottle.plugins import PluginHost
from bot_bottle.state import StateDir, now_iso
from bot_bottle.supervise_queue import SuperviseQueue, default_queue_dir

SLUG = "dev-7f3a"
NAMES = ["base.upstream.test", "new.upstream.test", "other.upstream.test"]


@dataclass
class World:
    upstream: LocalUpstream
    ca: BottleCA
    daemon: EgressProcess
    control: LocalEgressControl
    home: Path
    plugins: PluginHost

    @property
    def port(self) -> int:
        return self.upstream.https_port

    def queue(self) -> SuperviseQueue:
        return SuperviseQueue(default_queue_dir(SLUG), SLUG)

    def fetch(self, host: str) -> int:
        """Status of GET https://host:port/ through the daemon, as the agent sends it."""
        ctx = ssl.create_default_context(cafile=str(self.ca.agent_cert))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"https": self.daemon.proxy_url}),
            urllib.request.HTTPSHandler(context=ctx),
        )
        try:
            with opener.open(f"https://{host}:{self.port}/", timeout=20) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def hosts(self) -> list[str]:
        return sorted(r["host"] for r in self.control.live_routes()["routes"])


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalUpstream, Path]]:
    tmp = tmp_path_factory.mktemp("console-upstream")
    pki = make_test_pki(tmp / "pki", NAMES)
    (tmp / "git").mkdir()
    up = LocalUpstream(pki, tmp / "git").start()
    try:
        yield up, pki.ca_cert
    finally:
        up.stop()


@pytest.fixture
def world(
    upstream: tuple[LocalUpstream, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    up, upstream_ca = upstream
    home = tmp_path / "home"
    monkeypatch.setenv("BOT_BOTTLE_HOME", str(home))
    state = StateDir.for_slug(SLUG)
    state.create(
        {"slug": SLUG, "agent": "dev", "label": "night shift", "provider": "shell",
         "backend": "docker", "started_at": now_iso(), "pid": os.getpid()}
    )  # fmt: skip
    default_queue_dir(SLUG).mkdir(parents=True)
    config, _ = render_egress_config(
        [RouteSpec("base.upstream.test", ports=(up.https_port,))],
        upstream_ca=str(upstream_ca),
        extra_hosts=dict.fromkeys(NAMES, "127.0.0.1"),
        log_level="full",
    )
    # A directory of its own, as the bottle's mounted egress/ directory.
    path = tmp_path / "egress" / "egress.json"
    path.parent.mkdir()
    config.write(path)
    ca = generate_bottle_ca(tmp_path / "ca")
    daemon = start_egress(path, ca.confdir, env={"BOT_BOTTLE_HOME": str(home)})
    try:
        yield World(up, ca, daemon, LocalEgressControl(SLUG, daemon), home, PluginHost().load())
    finally:
        daemon.stop()
