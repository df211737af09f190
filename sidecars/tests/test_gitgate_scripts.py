"""Generated hook scripts quote every value; hostile names never reach them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bot_bottle_sidecars.gitgate.layout import (
    access_hook_argv,
    pre_receive_argv,
    render_hook_script,
)

from bot_bottle.gitgate.plan import plan_git_gate
from bot_bottle.gitgate.spec import GateKey, GateRepoSpec

HOSTILE = [
    "it's",
    'say "hi"',
    "two words",
    "a;rm -rf /",
    "line\nbreak",
    "`id`",
    "$(id)",
    "back\\slash",
    "-n",
    "",
]
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGt0a2t0a2t0a2t0a2t0a2t0a2t0a2t0a2t0a2t0a2t0"


def _sh_n(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("value", HOSTILE)
def test_hook_script_with_a_hostile_value_passes_sh_n_and_keeps_it_verbatim(
    tmp_path: Path, value: str
) -> None:
    script = tmp_path / "hook"
    script.write_text(render_hook_script(["printf", "%s\\0", value, "end"], pass_args=True))
    assert _sh_n(script).returncode == 0
    out = subprocess.run(["sh", str(script), "extra arg"], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [value.encode(), b"end", b"extra arg"]


@pytest.mark.parametrize("value", HOSTILE)
def test_pre_receive_and_access_hooks_quote_repo_and_paths(tmp_path: Path, value: str) -> None:
    for argv in (
        pre_receive_argv(sys.executable, tmp_path / value, value),
        access_hook_argv(sys.executable, tmp_path / value),
    ):
        script = tmp_path / "hook"
        script.write_text(render_hook_script(argv, pass_args=True))
        proc = _sh_n(script)
        assert proc.returncode == 0, proc.stderr


# The full list is checked against the validator in core; here, that the
# daemon turns the refusal into a clear exit, for a few representatives.
@pytest.mark.parametrize("name", ["it's", "line\nbreak", "`id`"])
def test_daemon_refuses_a_config_with_a_hostile_name_clearly(tmp_path: Path, name: str) -> None:
    plan = plan_git_gate(
        [GateRepoSpec("app", "ssh://git@forge.test/app.git", HOST_KEY, GateKey.static("/k"))],
        sidecar_root=tmp_path,
    )
    data = json.loads(plan.config.to_json())
    data["repos"][0]["name"] = name
    config = tmp_path / "config.json"
    config.write_text(json.dumps(data))
    proc = subprocess.run(
        [sys.executable, "-m", "bot_bottle_sidecars.gitgate", f"--config={config}",
         f"--base={tmp_path / 'base'}", "--port=1", "--listen=127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "git-gate cannot start" in proc.stderr and "repos.0.name" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "base").exists()


def test_daemon_writes_hooks_that_pass_sh_n_and_a_0600_key_copy(
    tmp_path: Path,
) -> None:
    from bot_bottle_sidecars.gitgate.daemon import prepare
    from bot_bottle_sidecars.gitgate.layout import Layout

    from bot_bottle.gitgate.config import GateConfig

    key = tmp_path / "host-key"
    plan = plan_git_gate(
        [GateRepoSpec("my-app.v2", "ssh://git@forge.test/app.git", HOST_KEY, GateKey.static(key))],
        sidecar_root=tmp_path / "sidecar",
    )
    for rel, text in plan.files().items():
        (tmp_path / "sidecar" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sidecar" / rel).write_text(text)
    mounted = tmp_path / "sidecar" / "keys" / "my-app.v2"
    mounted.parent.mkdir()
    mounted.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    mounted.chmod(0o444)  # a read-only mount keeps the host's mode
    layout = Layout(tmp_path / "base with space")
    config = GateConfig.load(tmp_path / "sidecar" / "config.json")
    mirrors = prepare(config, layout, sys.executable)
    assert mirrors == [layout.mirror("my-app.v2")]
    for script in (layout.mirror("my-app.v2") / "hooks" / "pre-receive", layout.access_hook):
        assert _sh_n(script).returncode == 0
        assert script.stat().st_mode & 0o777 == 0o755
    assert layout.key("my-app.v2").stat().st_mode & 0o777 == 0o600
    head = subprocess.run(
        ["git", f"--git-dir={mirrors[0]}", "config", "receive.denyNonFastForwards"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert head.stdout.strip() == "false"
    # A restarted daemon reuses its mirrors.
    (mirrors[0] / "marker").write_text("kept")
    assert prepare(config, layout, sys.executable) == mirrors
    assert (mirrors[0] / "marker").read_text() == "kept"
