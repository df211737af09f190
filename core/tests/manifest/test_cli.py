"""The manifest commands, run as a user runs them (a subprocess), with a
drop-in plugin in the temporary home providing 'claude' and a detector."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "manifests"

FAKE_PLUGIN = textwrap.dedent(
    """
    from pydantic import BaseModel, ConfigDict

    from bot_bottle import Registration, hookimpl


    class ClaudeOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        auth_token: str | None = None


    class Claude:
        options_model = ClaudeOptions


    @hookimpl
    def bot_bottle_register_agent_providers():
        return [Registration("claude", Claude, "test double")]


    @hookimpl
    def bot_bottle_register_dlp_detectors():
        return [Registration("token_patterns", object, "test double")]
    """
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "bbhome"
    (h / "contrib" / "fakeclaude").mkdir(parents=True)
    (h / "contrib" / "fakeclaude" / "plugin.py").write_text(FAKE_PLUGIN)
    shutil.copytree(EXAMPLES / "bottles", h / "bottles")
    shutil.copytree(EXAMPLES / "agents", h / "agents")
    return h


def bb(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Only the fakes below: the installed bot-bottle-dlp and bot-bottle-claude
    # would collide with them.
    env = {
        **os.environ,
        "BOT_BOTTLE_HOME": str(home),
        "BOT_BOTTLE_DISABLED_PLUGINS": "dlp,claude",
        "GITEA_TOKEN": "tok-SHOULD-NOT-SHOW",
    }
    return subprocess.run(
        [sys.executable, "-m", "bot_bottle.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or home,
        timeout=60,
        check=False,
    )


def test_list_agents_json(home: Path) -> None:
    (home / "agents" / "broken.md").write_text("---\nbottle: [\n---\n")
    r = bb(home, "list", "agents", "--json")
    assert r.returncode == 0, r.stderr
    rows = {a["name"]: a for a in json.loads(r.stdout)["agents"]}
    assert rows["implementer"] == {
        "name": "implementer",
        "source": "home",
        "path": str(home / "agents" / "implementer.md"),
        "bottle": "dev",
        "broken": False,
        "status": "ok",
        "reason": None,
    }
    assert rows["broken"]["broken"] is True
    assert "broken.md:" in rows["broken"]["reason"] and "invalid YAML" in rows["broken"]["reason"]


def test_list_agents_table_with_a_repo(home: Path, tmp_path: Path) -> None:
    repo = tmp_path / "proj"
    (repo / ".git").mkdir(parents=True)
    (repo / ".bot-bottle" / "agents").mkdir(parents=True)
    (repo / ".bot-bottle" / "bottles").mkdir(parents=True)
    (repo / ".bot-bottle" / "agents" / "docs.md").write_text("---\nbottle: base\n---\nDocs.\n")
    r = bb(home, "list", "agents", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "docs         repo    base    ok" in r.stdout
    assert "implementer  home    dev     ok" in r.stdout
    assert "warning: ignoring" in r.stderr and "never bottles" in r.stderr


def test_info_shows_provenance_and_names_never_values(home: Path) -> None:
    r = bb(home, "info", "implementer")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "bottle:      dev (extends base)" in out
    assert "git user:    Implementer Bot (agent) <agent@example.test> (bottle)" in out
    assert "GITEA_TOKEN (from $GITEA_TOKEN)" in out
    assert "DEPLOY_PASSPHRASE (asked at launch)" in out
    assert (
        "api.git.example.test [auth:token from $GITEA_TOKEN] only GET,POST "
        "/api/v1/repos/team/* ~^/api/v1/user$ [Accept=application/json]"
    ) in out
    assert "widgets  ssh://git@git.example.test:2222/team/widgets.git  key: static" in out
    assert "tok-SHOULD-NOT-SHOW" not in out + r.stderr
    # literal values are not shown either: a literal may be a credential
    assert "LOG_LEVEL" in out and "info," not in out.split("env:")[1].splitlines()[0]
    assert "limits:      agent: memory 4g, pids 4096, cpus 2.0" in out
    assert "limits:      bundle: memory 1g, pids 512, cpus 1.0" in out
    assert "limits:      relay: memory 256m, pids 64, cpus 0.5" in out


def test_info_json(home: Path) -> None:
    r = bb(home, "info", "implementer", "--json")
    info = json.loads(r.stdout)
    assert info["git_user"]["name_from"] == "agent"
    assert {e["name"]: e["source"] for e in info["env"]} == {
        "LOG_LEVEL": "literal",
        "GITEA_TOKEN": "host",
        "DEPLOY_PASSPHRASE": "prompt",
    }
    assert "tok-SHOULD-NOT-SHOW" not in r.stdout
    assert info["resources"]["bundle"] == {"memory": "1g", "pids": 512, "cpus": 1.0}


def test_info_unknown_agent_is_an_error_not_a_traceback(home: Path) -> None:
    r = bb(home, "info", "implementr")
    assert r.returncode == 1
    assert "error: no agent named 'implementr' (did you mean 'implementer'?)" in r.stderr
    assert "Traceback" not in r.stderr


def test_validate_ok_and_all_errors(home: Path) -> None:
    r = bb(home, "validate")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 file(s) OK" in r.stdout
    bad = home / "bottles" / "bad.md"
    bad.write_text("---\nagent_provider: {template: claude}\nsupervise: yes\negres: {}\n---\n")
    r = bb(home, "validate")
    assert r.returncode == 1
    assert f"error: {bad}:3: supervise:" in r.stdout
    assert f"error: {bad}:4: egres: unknown key 'egres' (did you mean 'egress'?)" in r.stdout
    r = bb(home, "validate", str(home / "agents" / "reviewer.md"))
    assert r.returncode == 0, r.stdout


def test_schema_includes_installed_plugin_options(home: Path) -> None:
    r = bb(home, "schema")
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    claude = schema["bottle"]["$defs"]["provider-claude"]
    assert claude["properties"]["template"] == {"const": "claude"}
    assert "auth_token" in claude["properties"]
    dlp = schema["bottle"]["$defs"]["RouteDlp"]["properties"]["outbound_detectors"]
    assert {"type": "string", "enum": ["token_patterns"]} in [o.get("items") for o in dlp["anyOf"]]
    assert schema["agent"]["properties"]["bottle"]["type"] == "string"
    assert json.loads(bb(home, "schema", "agent").stdout)["title"].startswith("bot-bottle agent")


def test_init_creates_examples_and_never_overwrites(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    r = bb(home, "init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (home / "bottles" / "base.md").is_file()
    assert (home / "bottles").stat().st_mode & 0o777 == 0o700
    assert (home / "bottles" / "base.md").stat().st_mode & 0o777 == 0o600
    mine = home / "agents" / "assistant.md"
    mine.write_text("---\nbottle: dev\n---\nmine\n")
    r = bb(home, "init", cwd=tmp_path)
    assert r.returncode == 0
    assert f"kept     {mine} (exists)" in r.stdout
    assert mine.read_text() == "---\nbottle: dev\n---\nmine\n"
