"""Shared set-up for the egress benchmarks: a local HTTPS upstream with its own
CA, a bottle CA and a running egress daemon with one route to the upstream."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot_bottle_sidecars.launch.ca import BottleCA, generate_bottle_ca
from bot_bottle_testkit.egress import (
    EgressProcess,
    LocalUpstream,
    TestPKI,
    make_test_pki,
    start_egress,
)

from bot_bottle.egress.render import RouteSpec, render_egress_config
from bot_bottle.secrets import Secret

HOST = "api.upstream.test"


@dataclass
class Setup:
    pki: TestPKI
    upstream: LocalUpstream
    ca: BottleCA
    egress: EgressProcess
    #: The daemon's environment (its route tokens), to start another like it.
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.upstream.https_port}"


@contextmanager
def egress_setup(
    log_level: str = "blocks", inbound_detectors: tuple[str, ...] = ()
) -> Iterator[Setup]:
    with tempfile.TemporaryDirectory(prefix="egress-bench-") as tmp_s:
        tmp = Path(tmp_s)
        pki = make_test_pki(tmp / "pki", [HOST])
        upstream = LocalUpstream(pki, tmp / "git").start()
        ca = generate_bottle_ca(tmp / "ca")
        config, env = render_egress_config(
            [
                RouteSpec(
                    HOST,
                    ports=(upstream.https_port,),
                    auth_scheme="Bearer",
                    token=Secret("bench-token-value"),
                    inbound_detectors=inbound_detectors or False,
                )
            ],
            log_level=log_level,  # type: ignore[arg-type]
            upstream_ca=str(pki.ca_cert),
            extra_hosts={HOST: "127.0.0.1"},
        )
        config.write(tmp / "egress.json")
        daemon_env = {k: v.reveal() for k, v in env.items()}
        egress = start_egress(tmp / "egress.json", ca.confdir, env=daemon_env)
        try:
            yield Setup(pki, upstream, ca, egress, daemon_env)
        finally:
            egress.stop()
            upstream.stop()
