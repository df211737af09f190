"""Fixtures for the egress tests: a real daemon, a local HTTPS upstream with its
own CA, a bare git repository, and a DLP test plugin dropped into contrib.

Everything runs on 127.0.0.1; ``*.upstream.test`` names are pinned there by the
config's ``extra_hosts``. No traffic leaves the machine.
"""

from __future__ import annotations

import ssl
import subprocess
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from bot_bottle_testkit.egress import (
    EgressProcess,
    LocalUpstream,
    TestPKI,
    make_test_pki,
    start_egress,
)

from bot_bottle.egress.ca import BottleCA, generate_bottle_ca
from bot_bottle.egress.config import EgressConfig
from bot_bottle.egress.render import RouteSpec, render_egress_config
from bot_bottle.secrets import Secret

UPSTREAM_NAMES = (
    "api.upstream.test",
    "match.upstream.test",
    "git.upstream.test",
    "nogit.upstream.test",
    "ws.upstream.test",
    "dlp.upstream.test",
    "noport.upstream.test",
    "noauth.upstream.test",
    "unlisted.upstream.test",
)
API_TOKEN = "tok-api-7c1f2e9a55d0"
MATCH_TOKEN = "tok-match-0b9d3c7e11aa"

# A contrib plugin with two detectors: "boom" blocks LEAKME, raises on BOOM (the
# scan pipeline turns that into a blocking finding) and returns a malformed
# finding on BADFINDING (which breaks the pipeline itself: to prove an addon
# failure refuses the request); "inbound-marker" blocks a response carrying
# EVIL-INSTRUCTION.
DLP_PLUGIN = textwrap.dedent(
    """
    from bot_bottle import hookimpl
    from bot_bottle.contracts.dlp import Action, Direction, DlpDetector, Finding, Location
    from bot_bottle.hookspecs import Registration


    class Boom(DlpDetector):
        direction = Direction.OUTBOUND
        max_match_bytes = 64

        def scan(self, data, context):
            if b"BOOM" in data:
                raise RuntimeError("detector exploded")
            if b"BADFINDING" in data:
                return [object()]
            i = data.find(b"LEAKME")
            if i < 0:
                return []
            loc = Location(context.location.part, context.location.name, offset=i, length=6)
            return [Finding("boom", "leakme", Action.BLOCK, loc, "[REDACTED:leakme]")]


    class Marker(DlpDetector):
        direction = Direction.INBOUND
        max_match_bytes = 64

        def scan(self, data, context):
            i = data.find(b"EVIL-INSTRUCTION")
            if i < 0:
                return []
            loc = Location("body", offset=i, length=16)
            return [Finding("inbound-marker", "evil", Action.BLOCK, loc, "[REDACTED:evil]")]


    @hookimpl
    def bot_bottle_register_dlp_detectors():
        return [
            Registration("boom", Boom, "test detector"),
            Registration("inbound-marker", Marker, "test detector"),
        ]
    """
)


@dataclass
class Env:
    pki: TestPKI
    upstream: LocalUpstream
    ca: BottleCA
    home: Path
    tmp: Path

    def write_config(
        self, path: Path, routes: Sequence[RouteSpec], **kw: Any
    ) -> tuple[EgressConfig, dict[str, str]]:
        kw.setdefault("upstream_ca", str(self.pki.ca_cert))
        kw.setdefault("extra_hosts", dict.fromkeys(UPSTREAM_NAMES, "127.0.0.1"))
        config, env = render_egress_config(routes, **kw)
        config.write(path)
        return config, {k: v.reveal() for k, v in env.items()}

    def start(self, path: Path, env: dict[str, str]) -> EgressProcess:
        return start_egress(path, self.ca.confdir, env={"BOT_BOTTLE_HOME": str(self.home), **env})

    @contextmanager
    def daemon(
        self,
        path: Path,
        routes: Sequence[RouteSpec],
        *,
        log_level: str,
        extra_env: Mapping[str, str] | None = None,
    ) -> Iterator[EgressProcess]:
        """A daemon with ``routes`` (config written to ``path``), stopped on exit."""
        _, env = self.write_config(path, routes, log_level=log_level)
        proc = self.start(path, {**env, **(extra_env or {})})
        try:
            yield proc
        finally:
            proc.stop()

    @contextmanager
    def client(self, daemon: EgressProcess, timeout: float = 20) -> Iterator[httpx.Client]:
        """An agent's HTTP client: through ``daemon``, trusting the bottle CA only."""
        ctx = ssl.create_default_context(cafile=str(self.ca.agent_cert))
        with httpx.Client(
            proxy=daemon.proxy_url, verify=ctx, trust_env=False, timeout=timeout
        ) as c:
            yield c

    def url(self, host: str, path: str) -> str:
        """``path`` on the local upstream's HTTPS port, by a pinned name."""
        return f"https://{host}:{self.upstream.https_port}{path}"


def _git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def egress_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("egress")
    pki = make_test_pki(tmp / "pki", UPSTREAM_NAMES)
    git_root = tmp / "git"
    work = tmp / "work"
    work.mkdir()
    _git("init", "-q", "-b", "main", str(work))
    (work / "README").write_text("hello\n")
    _git("-c", "user.name=t", "-c", "user.email=t@t", "add", "README", cwd=work)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=work)
    for repo in ("repo.git",):
        _git("clone", "-q", "--bare", str(work), str(git_root / repo))
        # The backend itself would accept a push: a refusal is the proxy's.
        _git("config", "http.receivepack", "true", cwd=git_root / repo)
    home = tmp / "home"
    (home / "contrib" / "egresstest").mkdir(parents=True)
    (home / "contrib" / "egresstest" / "plugin.py").write_text(DLP_PLUGIN)
    upstream = LocalUpstream(pki, git_root).start()
    ca = generate_bottle_ca(tmp / "bottle-ca")
    try:
        yield Env(pki, upstream, ca, home, tmp)
    finally:
        upstream.stop()


def main_routes(up: LocalUpstream) -> list[RouteSpec]:
    https, plain = up.https_port, up.http_port
    return [
        RouteSpec(
            "api.upstream.test",
            ports=(https, plain),
            auth_scheme="Bearer",
            token=Secret(API_TOKEN),
        ),
        RouteSpec(
            "match.upstream.test",
            ports=(https,),
            auth_scheme="token",
            token=Secret(MATCH_TOKEN),
            matches=(
                {"paths": [{"type": "prefix", "value": "/v1"}], "methods": ["get"]},
                {"paths": [{"type": "exact", "value": "/exact"}], "methods": ["POST"]},
                {"paths": [{"type": "regex", "value": "/items/[0-9]+"}]},
                {
                    "paths": [{"type": "prefix", "value": "/hdr"}],
                    "headers": [{"name": "X-Team", "value": "blue"}],
                },
                {
                    "paths": [{"type": "prefix", "value": "/hre"}],
                    "headers": [{"name": "x-ver", "value": "v[0-9]+", "type": "regex"}],
                },
            ),
        ),
        RouteSpec("git.upstream.test", ports=(https,), git_fetch=True),
        RouteSpec("nogit.upstream.test", ports=(https,)),
        RouteSpec("ws.upstream.test", ports=(https,), websocket=True),
        RouteSpec(
            "dlp.upstream.test",
            ports=(https,),
            outbound_detectors=("boom",),
            inbound_detectors=("inbound-marker",),
            websocket=True,
        ),
        RouteSpec("noport.upstream.test"),
        RouteSpec("noauth.upstream.test", ports=(https,)),
    ]


@pytest.fixture(scope="session")
def egress(egress_env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressProcess]:
    """One daemon with the main route table, shared by the modules that only read it."""
    path = tmp_path_factory.mktemp("cfg") / "egress.json"
    with egress_env.daemon(path, main_routes(egress_env.upstream), log_level="full") as proc:
        yield proc


@pytest.fixture
def curl(egress: EgressProcess, egress_env: Env) -> Callable[..., subprocess.CompletedProcess[str]]:
    """curl through the proxy, trusting the bottle CA; prints body then status."""

    def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "20",
                "--proxy",
                egress.proxy_url,
                "--cacert",
                str(egress_env.ca.agent_cert),
                *args,
                "-w",
                "\n%{http_code}",
                url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    return run
