"""Real bottles for tests: started by the Docker backend the way ``bot-bottle
run`` starts them (plan, launch, provision, wait for the sidecars), kept up
while the test execs into them, torn down after; and the "outside" network
a test's servers listen on.

The outside servers listen on the gateway address of a bridge network the
test creates: the bundle reaches host addresses from its own bridge, and the
bottle's ``extra_hosts`` pin real names (``api.anthropic.com``) there, so no
traffic leaves the machine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import docker

    from bot_bottle.contracts.provider import AgentProvider, ProviderPlan, ProvisionContext
    from bot_bottle.plan import BottlePlan
    from bot_bottle_docker.running import DockerRunningBottle

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass
class Launched:
    running: DockerRunningBottle
    plan: BottlePlan
    provider: AgentProvider
    ctx: ProvisionContext

    def as_agent(self, *argv: str, env: Mapping[str, str] | None = None) -> str:
        """``argv`` as the agent user with its HOME (what ``run`` does);
        stdout+stderr; the test fails on a non-zero exit."""
        from bot_bottle import provider_kit as kit

        result = self.running.exec(
            kit.agent_argv(self.plan.provider_plan, argv, env or {}), user="root"
        )
        text = (result.stdout + result.stderr).decode("utf-8", "replace")
        assert result.ok, f"{argv} exited {result.exit_code}: {text[-3000:]}"
        return text


@contextmanager
def outside_network(client: docker.DockerClient) -> Iterator[str]:
    """A bridge network this test owns; yields its gateway (host-side) address."""
    net = client.networks.create(
        f"bbtest-outside-{uuid.uuid4().hex[:8]}",
        driver="bridge",
        labels={"bot-bottle.test": "outside"},
    )
    try:
        net.reload()
        yield net.attrs["IPAM"]["Config"][0]["Gateway"]
    finally:
        net.remove()


def deploy_key(path: Path) -> str:
    """A fresh ed25519 key at ``path`` (OpenSSH format, 0600); returns its
    public half as a bottle pins it (``ssh-ed25519 AAAA...``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


def wake_supervise(running: Any) -> None:
    """Start supervise as an agent's first call would, and wait for its
    answer: it starts on demand (bot_bottle_sidecars.init), and the suites
    that inspect or break every daemon need it running. The request takes
    the agent's own path (its loopback, both relays)."""
    script = (
        "exec 3<>/dev/tcp/127.0.0.1/$1 && "
        'printf "GET /mcp HTTP/1.0\\r\\nHost: 127.0.0.1:$1\\r\\n\\r\\n" >&3 && head -c 5 <&3'
    )
    from bot_bottle.plan import MCP_PORT

    result = running.exec(["bash", "-c", script, "bash", str(MCP_PORT)])
    if result.stdout != b"HTTP/":
        pytest.fail(f"supervise did not answer its first request: {result!r}")


def write_agent(
    home: Path, name: str, bottle_md: str, prompt: str = "You are a test agent."
) -> None:
    (home / "bottles").mkdir(parents=True, exist_ok=True)
    (home / "agents").mkdir(parents=True, exist_ok=True)
    (home / "bottles" / f"{name}.md").write_text(bottle_md)
    (home / "agents" / f"{name}.md").write_text(f"---\nbottle: {name}\n---\n{prompt}\n")


@contextmanager
def launched(
    home: Path,
    agent_name: str,
    *,
    host_env: Mapping[str, str],
    label: str | None = None,
    cwd: Path | None = None,
) -> Iterator[Launched]:
    """The agent's bottle, up and provisioned, its sidecars answering."""
    from bot_bottle.launcher import provision_bottle, provision_context
    from bot_bottle.manifest.store import Manifest
    from bot_bottle.plan import make_plan
    from bot_bottle.plugins import PluginHost
    from bot_bottle.state import StateDir

    mp = pytest.MonkeyPatch()
    mp.setenv("BOT_BOTTLE_HOME", str(home))
    if HOST_CA.exists():  # builds behind this machine's TLS-inspecting proxy
        mp.setenv("BOT_BOTTLE_BUILD_CA_BUNDLE", str(HOST_CA))
        # The plan reads it from host_env: the same CA, so the same image tag
        # as tests/test_provider_images.py builds.
        host_env = {**host_env, "BOT_BOTTLE_BUILD_CA_BUNDLE": str(HOST_CA)}
    try:
        host = PluginHost().load()
        agent = Manifest(home=home, host=host).agent(agent_name)
        provider = host.create("agent_providers", agent.bottle.agent_provider.template)

        def ask(name: str) -> str:
            pytest.fail(f"unexpected prompt for {name}")

        # plugins/kubernetes/real-cluster.sh runs the same suites on a cluster.
        name = os.environ.get("BOT_BOTTLE_TEST_BACKEND", "docker")
        plan = make_plan(
            agent, provider, backend=name, host=host, host_env=host_env, ask=ask,
            label=label, cwd=cwd,
        )  # fmt: skip
        backend = host.create("backends", name)
        state = StateDir.for_slug(plan.slug)
        state.create({"slug": plan.slug, "agent": plan.agent, "pid": os.getpid()})
        try:
            prepared = backend.prepare(plan)
            with backend.launch(prepared) as running:
                options: Any = agent.resolved_bottle.provider_options
                ctx = provision_context(plan, options, workdir=prepared.workdir)
                provision_bottle(provider, running, ctx)
                running.wait_ready()
                if plan.supervise:
                    wake_supervise(running)
                yield Launched(running, plan, provider, ctx)  # type: ignore[arg-type]
        finally:
            state.remove()
    finally:
        mp.undo()


def assert_nowhere(bottle: Any, secret: str, plan: ProviderPlan) -> None:
    """``secret`` is in no file of the agent's home, /tmp or /etc, and in no
    environment of any process the agent can see. The needle goes in on
    stdin, so it is on no argv either."""
    found = bottle.exec(
        ["grep", "-rlsF", "-f", "-", plan.guest_home, "/tmp", "/etc"],
        user="root",
        stdin=secret.encode(),
    )
    assert found.stdout.decode().split() == []
    # As the agent: without CAP_SYS_PTRACE only its own processes' environ.
    environs = bottle.exec(
        ["sh", "-c", "for f in /proc/[0-9]*/environ; do cat $f; echo; done"], user=plan.user
    )
    assert environs.ok and b"HOME=" in environs.stdout
    assert secret.encode() not in environs.stdout
