"""Plans of real manifests (through core's make_plan) for the rendering tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot_bottle import Registration, hookimpl
from bot_bottle.manifest.store import Manifest
from bot_bottle.plan import make_plan
from bot_bottle.plugins import PluginHost
from bot_bottle_shell.provider import ShellProvider

#: Values no rendered object may carry outside the bundle's Secrets.
ROUTE_TOKEN = "route-token-value-7f3a9c"
BOTTLE_SECRET = "bottle-secret-value-51be02"

#: Everything a bottle can ask for: an injected credential, a bottle secret
#: (DLP), git-gate, supervise, pinned names, the agent's env.
FULL = """\
---
agent_provider:
  template: shell
env:
  LITERAL: plain
  API_KEY: ${BOTTLE_SECRET}
git_user:
  name: Bottle User
git_gate:
  repos:
    - name: proj
      url: ssh://git@git.example.test/me/proj.git
      host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHM/us+yJ8sNmo4On6iamuGgHQiQ62/N1DN4AwBLqQy2
      key: {provider: static, path: /nonexistent/key}
egress:
  routes:
    - host: api.example.test
      auth: {scheme: Bearer, token_ref: ROUTE_TOKEN}
extra_hosts:
  api.example.test: 10.9.8.7
---
"""
#: The least a bottle has: the proxy alone.
MINIMAL = """\
---
agent_provider:
  template: shell
supervise: false
---
"""


class _Shell:
    @hookimpl
    def bot_bottle_register_agent_providers(self) -> list[Registration[object]]:
        return [Registration("shell", ShellProvider)]


PlanFactory = Callable[..., Any]


@pytest.fixture
def make_kube_plan(
    bot_bottle_home: Path, bot_bottle_host: PluginHost, tmp_path: Path
) -> PlanFactory:
    """``make_kube_plan("full" | "minimal", cwd=bool, agent="a1")``: a plan
    of that bottle, as core makes it for ``--backend kubernetes``."""
    (bot_bottle_home / "bottles").mkdir(exist_ok=True)
    (bot_bottle_home / "agents").mkdir(exist_ok=True)
    (bot_bottle_home / "bottles/full.md").write_text(FULL)
    (bot_bottle_home / "bottles/minimal.md").write_text(MINIMAL)
    bot_bottle_host.register(_Shell(), "shell-test")
    workspace = tmp_path / "workspace"
    workspace.mkdir()

    def make(bottle: str = "full", *, cwd: bool = False, agent: str = "a1", **options: Any) -> Any:
        (bot_bottle_home / f"agents/{agent}.md").write_text(f"---\nbottle: {bottle}\n---\n")
        resolved = Manifest(home=bot_bottle_home, host=bot_bottle_host).agent(agent)
        return make_plan(
            resolved,
            ShellProvider(),
            backend="kubernetes",
            cwd=workspace if cwd else None,
            host_env={"ROUTE_TOKEN": ROUTE_TOKEN, "BOTTLE_SECRET": BOTTLE_SECRET},
            backend_options={"gvisor": True, **options},
        )

    return make


#: What a launch passes once the images are pushed and the anchor exists.
IMAGES = {
    "agent": "registry.test:5000/bot-bottle/agent@sha256:" + "a" * 64,
    "bundle": "registry.test:5000/bot-bottle/sidecars@sha256:" + "b" * 64,
}
ANCHOR_UID = "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
CA_FILES = {"bot-bottle-ca.crt": b"-----BEGIN CERTIFICATE-----\n", "bot-bottle-ca.key": b"KEY"}
GATE_KEYS = {"proj": b"-----BEGIN OPENSSH PRIVATE KEY-----\n"}


@pytest.fixture
def launch_inputs() -> dict[str, Any]:
    """``render_bottle`` keywords as a launch gives them (everything known)."""
    return {
        "namespace": "bottles",
        "images": dict(IMAGES),
        "anchor_uid": ANCHOR_UID,
        "bundle_address": "10.244.1.17",
        "ca_files": dict(CA_FILES),
        "gate_keys": dict(GATE_KEYS),
        "upstream_ca": b"-----BEGIN CERTIFICATE-----\nupstream\n",
        "home": "0123456789abcdef",
        "launcher": "boot-id:4242",
    }


# The cluster tests import their fake API server and kit as top-level modules
# (the suite runs with --import-mode=importlib, which adds no test dir to sys.path).
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from k8s_cluster_kit import fake, kube_env, shell  # noqa: E402, F401 - the cluster tests' fixtures
