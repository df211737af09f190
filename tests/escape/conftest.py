"""A real bottle (Docker backend, shell provider) and the outside world it is attacked from."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from bot_bottle_testkit.egress import make_test_pki

from tests.bottle_kit import deploy_key, launched, outside_network, write_agent
from tests.escape.outside import Outside

if TYPE_CHECKING:
    import docker

ROUTE_TOKEN = "escape-route-token-7f3a9c2e1d"
#: A bottle env value from the host (``${VAR}``): the agent can read it, it
#: matches no token pattern, and it must not leave by push or request.
BOTTLE_SECRET = "plain-words-" + "the-agent-can-read-81c4"
SECRETS = {
    "github": "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",
    "aws": "AKIAC2GKUKXJ54644TYI",
    "gitlab": "glpat-ZYsSJoj8E27-8wdGmYdi",
}


@dataclass
class Bottle:
    running: Any
    outside: Outside
    slug: str

    def sh(self, script: str, user: str = "agent", timeout: int = 60) -> tuple[int, str]:
        r = self.running.exec(["timeout", str(timeout), "bash", "-c", script], user=user)
        return r.exit_code, (r.stdout + r.stderr).decode("utf-8", "replace")


def _bottle_md(gw: str, ca: Path, key: Path, host_key: str, port: int) -> str:
    return f"""\
---
agent_provider:
  template: shell
env:
  PROJECT_PASSPHRASE: ${{ESCAPE_BOTTLE_SECRET}}
git_user:
  name: Escape Test
  email: escape@example.test
git_gate:
  repos:
    - name: proj
      url: ssh://git@{gw}:{port}/proj.git
      host_key: {host_key}
      key: {{provider: static, path: {key}}}
egress:
  log: full
  upstream_ca: {ca}
  routes:
    - host: allowed.test
      auth: {{scheme: Bearer, token_ref: ESCAPE_ROUTE_TOKEN}}
extra_hosts:
  allowed.test: {gw}
  other.test: {gw}
---
"""


@pytest.fixture(scope="module")
def bottle(
    docker_client: docker.DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bottle]:
    tmp = tmp_path_factory.mktemp("escape")
    with outside_network(docker_client) as gw:
        pki = make_test_pki(tmp / "pki", ["allowed.test", "other.test"])
        outside = Outside(gw, pki).start()
        try:
            key_path = tmp / "deploy_key"
            host_key = deploy_key(key_path)
            bottle_md = _bottle_md(gw, pki.ca_cert, key_path, host_key, outside.listener_port)
            write_agent(tmp / "home", "esc", bottle_md, prompt="Escape test agent.")
            host_env = {
                **os.environ,
                "ESCAPE_ROUTE_TOKEN": ROUTE_TOKEN,
                "ESCAPE_BOTTLE_SECRET": BOTTLE_SECRET,
            }
            with launched(tmp / "home", "esc", host_env=host_env) as b:
                yield Bottle(b.running, outside, b.plan.slug)
        finally:
            outside.stop()
