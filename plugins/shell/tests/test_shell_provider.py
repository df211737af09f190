"""The shell provider: discovery, options through the manifest, plan, argv,
and provisioning of a real container of its own image."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from bot_bottle_testkit.manifest import write_home

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.provider import AgentProvider, ProvisionContext
from bot_bottle.manifest import Manifest, ManifestError
from bot_bottle.plugins import PluginHost, Source, Status
from bot_bottle_shell.provider import HOME, PROMPT_PATH, SKILLS_DIR, ShellOptions, ShellProvider

if TYPE_CHECKING:
    import docker

    from bot_bottle.images import ImageResult

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost(environ={}, contrib=Path("/nonexistent")).load()


def test_shell_is_discovered_through_its_entry_point(host: PluginHost) -> None:
    comp = host.component("agent_providers", "shell")
    assert comp.distribution == "bot-bottle-shell"
    info = host.infos["shell"]
    assert (info.source, info.status) == (Source.ENTRY_POINT, Status.ACTIVE)
    provider = comp.create()
    assert isinstance(provider, AgentProvider) and provider.name == "shell"


def _home(tmp_path: Path, provider_block: str) -> Path:
    return write_home(tmp_path, provider_block, agent="poker", agent_body="Poke around.\n")


def test_a_bottle_with_template_shell_gets_its_options(tmp_path: Path, host: PluginHost) -> None:
    home = _home(tmp_path, "agent_provider:\n  template: shell\n  shell: /bin/sh\n")
    options = Manifest(home=home, host=host).agent("poker").resolved_bottle.provider_options
    assert isinstance(options, ShellOptions) and options.shell == "/bin/sh"
    default = _home(tmp_path / "d", "agent_provider:\n  template: shell\n")
    options = Manifest(home=default, host=host).agent("poker").resolved_bottle.provider_options
    assert isinstance(options, ShellOptions) and options.shell == "/bin/bash"


def test_an_unknown_option_is_rejected(tmp_path: Path, host: PluginHost) -> None:
    home = _home(tmp_path, "agent_provider:\n  template: shell\n  auth_token: TOK\n")
    with pytest.raises(ManifestError, match="auth_token"):
        Manifest(home=home, host=host).agent("poker")


def test_the_plan_has_no_credential_and_no_route() -> None:
    plan = ShellProvider().plan(ShellOptions(), host_env={"ANTHROPIC_API_KEY": "sk-real"})
    assert dict(plan.env) == {}
    assert plan.routes == ()
    assert (plan.user, plan.guest_home) == ("agent", HOME)
    assert (plan.skills_dir, plan.prompt_path) == (SKILLS_DIR, PROMPT_PATH)


def test_the_image_is_the_dockerfile_beside_the_module() -> None:
    spec = ShellProvider().image(ShellOptions())
    assert spec.dockerfile.name == "Dockerfile" and spec.dockerfile.is_file()
    text = spec.dockerfile.read_text()
    assert all(tool in text for tool in ("curl", "git", "dnsutils"))
    assert "useradd" in text and " agent" in text


def _ctx(options: ShellOptions | None = None, **kw: object) -> ProvisionContext:
    plan = ShellProvider().plan(ShellOptions(), host_env={})
    return ProvisionContext(plan=plan, ca_cert_path="/tmp/ca.pem", supervise_url=None,
                            options=options, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_interactive_argv_is_the_chosen_shell_as_a_login_shell() -> None:
    provider = ShellProvider()
    assert provider.interactive_argv(_ctx(ShellOptions.model_validate({"shell": "/bin/sh"}))) == [
        "/bin/sh",
        "-l",
    ]
    # No options (a plan made before options existed): the default shell.
    assert provider.interactive_argv(_ctx()) == ["/bin/bash", "-l"]


def test_the_headless_prompt_is_a_command_line_bash_runs() -> None:
    provider = ShellProvider()
    argv = provider.headless_argv(_ctx(), "echo one; echo two >&2; exit 3")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "one\n", "two\n")
    empty = provider.headless_argv(_ctx(), "")
    assert subprocess.run(empty, capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def shell_image(docker_client: docker.DockerClient, base_image: str) -> ImageResult:
    spec = ShellProvider().image(ShellOptions())
    extra_ca = HOST_CA if HOST_CA.exists() else None
    return kit.ensure_agent_image("shell", spec, base_image=base_image, extra_ca=extra_ca)


@pytest.mark.docker
def test_provision_puts_ca_skills_prompt_and_supervise_url_in_a_real_container(
    shell_image: ImageResult, tmp_path: Path
) -> None:
    from tests.provider_bottle import container_bottle

    skill = tmp_path / "skills" / "poke"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("# poke\nPoke the network.\n")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(HOST_CA.read_bytes().split(b"-----END CERTIFICATE-----")[0]
                   + b"-----END CERTIFICATE-----\n")  # fmt: skip
    provider = ShellProvider()
    plan = provider.plan(ShellOptions(), host_env={})
    with container_bottle(shell_image.tag, plan) as bottle:
        # The launcher's duty before provision: the bottle CA at ca_cert_path.
        bottle.copy_in(ca, "/run/bottle-ca.pem", mode=0o644, owner="root")
        supervise_url = "http://supervise.bottle.test:8080/mcp"
        ctx = ProvisionContext(
            plan=plan,
            ca_cert_path="/run/bottle-ca.pem",
            supervise_url=supervise_url,
            skills=(skill,),
            prompt="Poke around.\n",
            options=ShellOptions(),
        )
        provider.provision(bottle, ctx)

        def agent(script: str) -> str:
            result = bottle.exec(["sh", "-c", script], user="agent")
            assert result.exit_code == 0, result
            return result.stdout.decode()

        assert agent(f"cat {PROMPT_PATH}") == "Poke around.\n"
        assert agent(f"cat {HOME}/.bot-bottle/supervise") == supervise_url + "\n"
        assert "Poke the network." in agent(f"cat {SKILLS_DIR}/poke/SKILL.md")
        # Everything the provider wrote is the agent's own.
        owners = agent(f"stat -c %U {PROMPT_PATH} {SKILLS_DIR}/poke/SKILL.md")
        assert set(owners.split()) == {"agent"}
        # The CA is in the system bundle curl and git read.
        first_line = ca.read_text().splitlines()[1]
        assert first_line in agent("cat /etc/ssl/certs/ca-certificates.crt")
        # Provisioning a resumed bottle again does not append the CA twice.
        provider.provision(bottle, ctx)
        assert agent("cat /etc/ssl/certs/ca-certificates.crt").count(first_line) == 1
        # The tools the provider promises are there for the agent.
        assert "curl" in agent("curl --version") and "git version" in agent("git --version")
        assert agent("command -v dig")
