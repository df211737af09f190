"""A drop-in agent provider (examples/contrib/generic-cli) in a contrib folder:
discovered, listed, its options validated through the manifest, its image
built and its agent run headless in a container from that image."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from bot_bottle_sidecars.launch.ca import generate_bottle_ca

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.provider import AgentProvider, ProvisionContext
from bot_bottle.errors import BotBottleError
from bot_bottle.manifest import Manifest, ManifestError
from bot_bottle.plugins import PluginHost, Source, Status
from bot_bottle_docker.images import ensure_agent_image
from tests.conftest import REPO, run
from tests.provider_bottle import container_bottle

if TYPE_CHECKING:
    import docker

EXAMPLE = REPO / "examples" / "contrib" / "generic-cli"
KEY = "example-REAL-api-key-9f8e7d"


@pytest.fixture
def contrib(tmp_path: Path) -> Path:
    root = tmp_path / "bot-bottle-home"
    shutil.copytree(EXAMPLE, root / "contrib" / "generic-cli")
    return root


def _host(home: Path) -> PluginHost:
    return PluginHost(environ={}, contrib=home / "contrib", load_entry_points=False).load()


def test_the_drop_in_provider_is_listed_from_contrib(contrib: Path) -> None:
    host = _host(contrib)
    info = host.infos["generic-cli"]
    assert (info.source, info.status) == (Source.CONTRIB, Status.ACTIVE)
    assert host.component("agent_providers", "generic-cli").plugin == "generic-cli"
    host.collect_all()
    assert info.components == {"agent_providers": ["generic-cli"]}
    provider = host.create("agent_providers", "generic-cli")
    assert isinstance(provider, AgentProvider)
    # The Dockerfile next to the module is the image.
    spec = provider.image(provider.options_model())
    assert spec.dockerfile == (contrib / "contrib" / "generic-cli" / "Dockerfile").resolve()


def test_plugins_list_shows_the_drop_in(contrib: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_BOTTLE_")}
    env["BOT_BOTTLE_HOME"] = str(contrib)
    r = run([sys.executable, "-m", "bot_bottle", "plugins", "list", "--json"], env=env)
    assert r.returncode == 0, r.stderr
    plugins = {p["name"]: p for p in json.loads(r.stdout)["plugins"]}
    assert plugins["generic-cli"]["source"] == "contrib"
    assert plugins["generic-cli"]["components"] == {"agent_providers": ["generic-cli"]}
    # The built-ins sit beside it, from their entry points.
    assert plugins["claude"]["distribution"] == "bot-bottle-claude"
    assert plugins["codex"]["distribution"] == "bot-bottle-codex"


def _bottle(home: Path, options: str) -> Manifest:
    (home / "bottles").mkdir(exist_ok=True)
    (home / "agents").mkdir(exist_ok=True)
    (home / "bottles" / "cli.md").write_text(
        f"---\nagent_provider:\n  template: generic-cli\n{options}---\n"
    )
    (home / "agents" / "bot.md").write_text("---\nbottle: cli\n---\nYou are a shell agent.\n")
    return Manifest(home=home, host=_host(home))


def test_drop_in_options_are_validated_by_its_model(contrib: Path) -> None:
    manifest = _bottle(contrib, "  api_hots: api.example.test\n")
    with pytest.raises(ManifestError, match="did you mean 'api_host'"):
        manifest.agent("bot")
    manifest = _bottle(contrib, "  api_key: KEY_VAR\n")
    with pytest.raises(ManifestError, match="api_key needs api_host"):
        manifest.agent("bot")


def test_drop_in_plan_keeps_the_key_out_of_the_agent(contrib: Path) -> None:
    manifest = _bottle(
        contrib, "  api_host: api.example.test\n  api_key: EXAMPLE_KEY\n  key_variable: MY_KEY\n"
    )
    agent = manifest.agent("bot")
    provider = _host(contrib).create("agent_providers", "generic-cli")
    options = agent.resolved_bottle.provider_options
    assert options is not None
    plan = provider.plan(options, host_env={"EXAMPLE_KEY": KEY})
    assert plan.env["MY_KEY"] == kit.PLACEHOLDER
    (route,) = plan.routes
    assert route.host == "api.example.test" and route.token is not None
    assert route.token.reveal() == KEY and KEY not in repr(plan)
    with pytest.raises(BotBottleError, match="EXAMPLE_KEY"):
        provider.plan(options, host_env={})


@pytest.mark.docker
def test_the_drop_in_builds_and_runs_headless(
    docker_client: docker.DockerClient, base_image: str, contrib: Path, tmp_path: Path
) -> None:
    manifest = _bottle(contrib, '  headless: [bash, -c, "{prompt}"]\n')
    agent = manifest.agent("bot")
    provider = _host(contrib).create("agent_providers", "generic-cli")
    options = agent.resolved_bottle.provider_options
    assert options is not None
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    image = ensure_agent_image(
        kit.agent_image_spec(
            "generic-cli",
            provider.image(options),
            base_image=base_image,
            extra_ca=host_ca if host_ca.exists() else None,
        )
    )
    plan = provider.plan(options, host_env={})
    with container_bottle(image.tag, plan) as bottle:
        ca = generate_bottle_ca(tmp_path / "ca")
        bottle.copy_in(ca.agent_cert, "/tmp/ca.crt", mode=0o644)
        ctx = ProvisionContext(
            plan=plan, ca_cert_path="/tmp/ca.crt", supervise_url=None, prompt=agent.prompt
        )
        provider.provision(bottle, ctx)
        argv = provider.headless_argv(ctx, 'echo "$(id -un): $(cat "$AGENT_PROMPT_FILE")"')
        result = bottle.exec(kit.agent_argv(plan, argv), user="root")
    assert result.ok, result.stderr
    assert result.stdout.decode().strip() == "agent: You are a shell agent."
