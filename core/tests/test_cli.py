"""The CLI boundary: version, usage errors, doctor's verdicts. Run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def bb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bot_bottle.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    r = bb("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("bot-bottle ")


def test_unknown_command_is_a_usage_error_without_traceback() -> None:
    r = bb("frobnicate")
    assert r.returncode == 2
    assert "error:" in r.stderr and "Traceback" not in r.stderr
    assert "--help" in r.stderr


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from bot_bottle.cli import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = [m for m in ('pluggy', 'pydantic', 'structlog', 'docker', 'mitmproxy')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


def test_doctor_reports_missing_docker_and_exits_nonzero(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock", "BOT_BOTTLE_HOME": str(tmp_path)}
    r = bb("doctor", env=env)
    assert r.returncode == 1
    assert "FAIL  docker: cannot reach Docker at unix://" in r.stdout
    assert "start the Docker engine" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_doctor_tcp_host_refusing_connections(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens there on these machines.
    r = bb(
        "doctor",
        "--json",
        env={"DOCKER_HOST": "tcp://127.0.0.1:9", "BOT_BOTTLE_HOME": str(tmp_path)},
    )
    assert r.returncode == 1
    report = json.loads(r.stdout)
    docker = next(c for c in report["checks"] if c["what"] == "docker")
    assert docker["level"] == "FAIL"
    assert report["ok"] is False


def test_doctor_reports_unwritable_state_dir(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    r = bb("doctor", "--json", env={"BOT_BOTTLE_HOME": str(not_a_dir)})
    report = json.loads(r.stdout)
    state = next(c for c in report["checks"] if c["what"] == "state")
    assert state["level"] == "FAIL"
    assert "BOT_BOTTLE_HOME" in state["hint"]
    assert r.returncode == 1


def test_doctor_lists_a_broken_contrib_plugin_as_fail(tmp_path: Path) -> None:
    (tmp_path / "contrib/bad").mkdir(parents=True)
    (tmp_path / "contrib/bad/plugin.py").write_text("raise RuntimeError('kaput')\n")
    r = bb("doctor", env={"BOT_BOTTLE_HOME": str(tmp_path)})
    assert "FAIL  plugin bad: contrib: import failed: RuntimeError: kaput" in r.stdout
    assert r.returncode == 1


def test_plugins_list_shows_broken_plugin_and_exits_zero(tmp_path: Path) -> None:
    (tmp_path / "contrib/bad").mkdir(parents=True)
    (tmp_path / "contrib/bad/plugin.py").write_text("raise RuntimeError('kaput')\n")
    r = bb("plugins", "list", env={"BOT_BOTTLE_HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "bad: import failed: RuntimeError: kaput" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_closed_pipe_is_not_an_internal_error(tmp_path: Path) -> None:
    # `bot-bottle schema | head`: the reader exits before the output is written.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot_bottle.cli", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "BOT_BOTTLE_HOME": str(tmp_path)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    # Close before the interpreter has even started: its first write fails.
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "internal error" not in err and "Traceback" not in err


def test_run_needs_a_prompt_or_a_command_and_not_both(tmp_path: Path) -> None:
    # Checked before the manifest is read or Docker is touched: DOCKER_HOST
    # points at nothing and the home has no agents.
    env = {"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock", "BOT_BOTTLE_HOME": str(tmp_path)}
    usage = "hint: bot-bottle run AGENT -p 'PROMPT'  or  bot-bottle run AGENT -- CMD"
    for args, message in [
        ((), f"error: nothing to run\n{usage}"),
        (
            ("-p", "fix it", "--", "true"),
            f"error: give either a prompt or a command, not both\n{usage}",
        ),
        (("--prompt-file", str(tmp_path / "missing.md")), "error: cannot read the prompt from"),
    ]:
        r = bb("run", "some-agent", *args, env=env)
        assert r.returncode == 1, r.stderr
        assert message in r.stderr
        assert "Traceback" not in r.stderr
    (tmp_path / "empty.md").write_text("  \n")
    r = bb("run", "some-agent", "--prompt-file", str(tmp_path / "empty.md"), env=env)
    assert r.returncode == 1 and "is empty" in r.stderr


def test_run_prompt_and_prompt_file_are_exclusive() -> None:
    r = bb("run", "some-agent", "-p", "a", "--prompt-file", "-")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr


def test_cleanup_keeps_the_state_of_a_backend_it_cannot_reach(tmp_path: Path) -> None:
    # The state dir is the only record of a bottle whose containers cleanup
    # could not look at: removing it would report success and leak them.
    state = tmp_path / "home" / "state" / "demo-abc123"
    state.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (state / "metadata.json").write_text(json.dumps({"backend": "docker", "pid": int(dead)}))
    env = {
        **os.environ,
        "BOT_BOTTLE_HOME": str(tmp_path / "home"),
        "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
    }
    r = bb("cleanup", "--yes", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "skipping backend docker: not available" in r.stderr
    assert f"keeping {state}: its backend is not available" in r.stderr
    assert state.exists()


def test_list_active_without_an_engine_says_it_cannot_tell(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"BOT_BOTTLE_HOME": str(home), "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    # Nothing started from this home: nothing to be unsure about.
    quiet = bb("list", "active", env=env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "no active bottles\n", "")
    # A bottle started here that nobody has ended: its engine's silence is
    # not "no active bottles".
    (home / "state" / "demo-1").mkdir(parents=True)
    meta = {"slug": "demo-1", "backend": "docker", "pid": os.getpid()}
    (home / "state" / "demo-1" / "metadata.json").write_text(json.dumps(meta))
    r = bb("list", "active", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == "no active bottles that could be asked\n"
    assert r.stderr.startswith("warning: cannot list the bottles of backend docker: cannot reach")
    js = bb("list", "active", "--json", env=env)
    assert js.returncode == 1
    assert json.loads(js.stdout) == {"active": [], "unavailable": ["docker"]}


def test_a_lost_connection_is_an_error_not_a_bug() -> None:
    """What the Docker SDK raises when the engine goes away mid-command:
    requests' error around urllib3's around the socket's."""
    import requests
    import urllib3

    from bot_bottle.cli import _lost_connection

    def chain() -> None:
        try:
            try:
                raise ConnectionResetError(104, "Connection reset by peer")
            except OSError as e:
                raise urllib3.exceptions.ProtocolError("Connection aborted.", e) from None
        except urllib3.exceptions.ProtocolError as e:
            raise requests.exceptions.ConnectionError(e)  # noqa: B904 (as requests does)

    try:
        chain()
    except Exception as exc:
        assert _lost_connection(exc)
    else:
        raise AssertionError("no exception")
    assert not _lost_connection(ValueError("x"))
    assert not _lost_connection(FileNotFoundError(2, "x"))


def test_doctor_warns_for_a_backend_of_another_os(tmp_path: Path) -> None:
    # A contrib backend that cannot run here: a WARN line saying why, not a
    # failed doctor (the Docker engine and the rest may be fine).
    (tmp_path / "contrib/elsewhere").mkdir(parents=True)
    (tmp_path / "contrib/elsewhere/plugin.py").write_text(
        "from bot_bottle import Registration, hookimpl\n"
        "from bot_bottle.contracts.backend import Backend\n"
        "from bot_bottle.contracts.common import Availability\n"
        "class B(Backend):\n"
        "    name = 'elsewhere'\n"
        "    def is_available(self):\n"
        "        return Availability.no('runs on macOS only; this host is Linux', 'use docker')\n"
        "    def prepare(self, plan): raise NotImplementedError\n"
        "    def launch(self, prepared): raise NotImplementedError\n"
        "    def list_active(self): return []\n"
        "    def find_orphans(self): return []\n"
        "    def cleanup(self, items): return []\n"
        "@hookimpl\n"
        "def bot_bottle_register_backends():\n"
        "    return [Registration('elsewhere', B, 'x')]\n"
    )
    r = bb("doctor", "--json", env={"BOT_BOTTLE_HOME": str(tmp_path)})
    report = json.loads(r.stdout)
    line = next(c for c in report["checks"] if c["what"] == "backend elsewhere")
    assert line["level"] == "WARN" and "this host is Linux" in line["detail"]
    assert line["hint"] == "use docker"


def test_a_wrapped_lost_connection_gets_the_lost_connection_words(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An engine that dies under an exec reaches the CLI as a BotBottleError
    ("bottle X is not usable: ...") whose cause is the refused connection:
    the operator gets the same words and hint as for an unwrapped one."""
    from bot_bottle import cli
    from bot_bottle.cli import list_cmd
    from bot_bottle.errors import BotBottleError

    def dies(_args: object) -> int:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise BotBottleError(f"bottle b-1 is not usable: {exc}") from exc

    monkeypatch.setattr(list_cmd, "run_active", dies)
    assert cli.main(["list", "active"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: lost the connection to a service bot-bottle was using")
    assert "bottle b-1 is not usable" in err and "'bot-bottle cleanup'" in err
    assert "internal error" not in err

    # A wrapped error that brings its own hint keeps its own words.
    def hinted(_args: object) -> int:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise BotBottleError("the forge is down", hint="try later") from exc

    monkeypatch.setattr(list_cmd, "run_active", hinted)
    assert cli.main(["list", "active"]) == 1
    assert capsys.readouterr().err == "error: the forge is down\nhint: try later\n"


def test_the_program_leaves_without_finalizing_but_loses_no_output(tmp_path: Path) -> None:
    """The program skips the interpreter's finalization (entry()); what was
    written must still all arrive, through a pipe, and so must exit codes."""
    from contextlib import redirect_stdout
    from io import StringIO

    from bot_bottle.cli import main

    env = {"BOT_BOTTLE_HOME": str(tmp_path)}
    r = bb("schema", env=env)
    assert r.returncode == 0
    inside = StringIO()
    with redirect_stdout(inside):
        assert main(["schema"]) == 0
    assert r.stdout == inside.getvalue() and len(r.stdout) > 10_000
    json.loads(r.stdout)
    missing = bb("info", "no-such-agent", env=env)
    assert missing.returncode == 1 and missing.stderr.startswith("error:")
