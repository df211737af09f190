"""Names and values from repositories reach the operator's terminal escaped
(an agent writes them, the operator reads them): ``list agents``, ``info``,
``start``'s preflight, error messages and log lines. Run as a user would
(the real CLI in a subprocess)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot_bottle.termtext import first_unsafe

#: ESC alone, a CSI colour, an OSC 52 clipboard write, C1 CSI, a bidi
#: override, zero-width space, line separator, Unicode tag characters.
HOSTILE = {
    "esc": "x\x1by",
    "csi": "x\x1b[31my",
    "osc": "x\x1b]52;c;ZXZpbA==\x07y",
    "c1": "x\x9b31my",
    "bidi": "x\u202egpj.exe",
    "zero-width": "x\u200by",
    "line-separator": "x\u2028y",
    "tags": "x\U000e0041\U000e0042y",
}


def bb(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot_bottle.cli", *args], capture_output=True, text=True,
        env={**os.environ, **env}, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip


def assert_clean(text: str, needle: str) -> None:
    assert first_unsafe(text, allow_newlines=True) is None, repr(text[:500])
    # The character is shown, escaped, not dropped.
    assert "\\x" in text or "\\u" in text or "\\U" in text, needle


@pytest.fixture
def world(tmp_path: Path) -> tuple[dict[str, str], Path]:
    env = {"BOT_BOTTLE_HOME": str(tmp_path / "home"), "DOCKER_HOST": "unix:///nonexistent"}
    repo = tmp_path / "repo"
    (repo / ".bot-bottle" / "agents").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    r = bb("init", env=env, cwd=repo)
    assert r.returncode == 0, r.stderr
    return env, repo


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_list_agents_info_and_errors_escape_a_hostile_agent_file_name(
    world: tuple[dict[str, str], Path], kind: str
) -> None:
    env, repo = world
    name = HOSTILE[kind]
    (repo / ".bot-bottle" / "agents" / f"{name}.md").write_text("---\nbottle: demo\n---\nhi\n")
    r = bb("list", "agents", env=env, cwd=repo)
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout + r.stderr, kind)
    for argv in (("info", name), ("start", "--dry-run", name), ("validate",)):
        r = bb(*argv, env=env, cwd=repo)
        assert r.returncode != 0
        assert_clean(r.stdout + r.stderr, kind)
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_info_and_the_preflight_escape_hostile_manifest_values(
    world: tuple[dict[str, str], Path], kind: str
) -> None:
    """A valid agent whose bottle carries a hostile git identity, started
    on a directory with a hostile name."""
    env, repo = world
    value = HOSTILE[kind]
    home = Path(env["BOT_BOTTLE_HOME"])
    (home / "bottles" / "evil.md").write_text(
        "---\nagent_provider:\n  template: shell\ngit_user:\n"
        f"  name: {json.dumps(value)}\n  email: a@b.test\n---\n"
    )
    (repo / ".bot-bottle" / "agents" / "evil.md").write_text("---\nbottle: evil\n---\nhi\n")
    r = bb("info", "evil", env=env, cwd=repo)
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout + r.stderr, kind)
    cwd = repo / f"work-{value}"
    cwd.mkdir()
    r = bb("start", "--dry-run", "--cwd", str(cwd), "evil", env=env, cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "workspace:" in r.stderr
    assert_clean(r.stdout + r.stderr, kind)


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_log_lines_escape_event_and_fields(kind: str) -> None:
    from bot_bottle.log import configure_logging, get_logger

    out = io.StringIO()
    configure_logging("console", stream=out)
    try:
        get_logger("t").warning(f"refused {HOSTILE[kind]}", host=HOSTILE[kind])
    finally:
        configure_logging("console")
    assert_clean(out.getvalue(), kind)
    assert out.getvalue().count("\n") == 1
