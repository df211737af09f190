"""provider_kit: the helpers providers share (the in-container steps are
exercised by tests/test_provider_images.py against real images)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.backend import ExecResult
from bot_bottle.contracts.provider import ImageSpec, ProviderPlan
from bot_bottle.errors import BotBottleError


def test_env_var_names_are_accepted_and_a_pasted_token_is_refused_unechoed() -> None:
    assert kit.env_var_name("BOT_BOTTLE_CLAUDE_OAUTH_TOKEN") == "BOT_BOTTLE_CLAUDE_OAUTH_TOKEN"
    token = "sk-ant-oat01-abc-DEF"
    with pytest.raises(ValueError) as info:
        kit.env_var_name(token)
    assert token not in str(info.value)


def test_read_host_token_names_the_missing_variable() -> None:
    assert kit.read_host_token({"T": " tok \n"}, "T", option="o", hint="h") == "tok"
    with pytest.raises(BotBottleError, match="names the host environment variable T, which is not"):
        kit.read_host_token({}, "T", option="o", hint="h")


def test_agent_argv_switches_user_and_sets_home_without_a_login_shell() -> None:
    plan = ProviderPlan(env={}, user="agent", guest_home="/home/agent")
    argv = kit.agent_argv(plan, ["tool", "--flag"], {"X": "1"})
    assert argv[:4] == ["runuser", "-u", "agent", "--"]
    assert "-l" not in argv
    assert argv[4:] == ["env", "HOME=/home/agent", "USER=agent", "LOGNAME=agent", "X=1",
                        "tool", "--flag"]  # fmt: skip


def test_check_reports_the_failed_step_with_its_output() -> None:
    with pytest.raises(kit.ProvisionError, match=r"registering x failed \(exit 2\): boom"):
        kit.check(ExecResult(2, b"", b"boom\n"), "registering x")
    assert kit.check(ExecResult(0), "fine").ok


def test_printable_drops_control_characters() -> None:
    assert kit.printable("a\x1b[2Jb\nc") == "a[2Jbc"


class _Here:
    pass


def test_dockerfile_beside_names_the_file_next_to_the_class_module() -> None:
    assert kit.dockerfile_beside(_Here) == Path(__file__).resolve().with_name("Dockerfile")
    assert kit.dockerfile_beside(_Here()) == kit.dockerfile_beside(_Here)


def test_agent_image_spec_decides_repository_base_image_and_args(tmp_path: Path) -> None:
    spec = ImageSpec(dockerfile=tmp_path / "Dockerfile", build_args={"V": "1"})
    built = kit.agent_image_spec("My Tool", spec, base_image="b:1", extra_ca=None)
    assert built.repository == "bot-bottle/agent-my-tool"
    assert (built.base_image, dict(built.build_args)) == ("b:1", {"V": "1"})
    # The provider's own BASE_IMAGE build arg wins over the default.
    pinned = ImageSpec(dockerfile=spec.dockerfile, build_args={"BASE_IMAGE": "x:2"})
    built = kit.agent_image_spec("t", pinned, base_image="b:1")
    assert (built.base_image, dict(built.build_args)) == ("x:2", {})
