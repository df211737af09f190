"""Scanning never weakens silently. A detector name two
plugins register, a detector plugin that fails, and a contrib detector the
sidecar bundle cannot carry each give one clear, fast outcome in
``bot-bottle dlp scan``, ``start --dry-run`` and ``run``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BB = [sys.executable, "-m", "bot_bottle"]
GITLAB_TOKEN = "glpat-Xq9vL2mR7kZp4wT8yN3b"

CONFLICTING = """\
from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.dlp import Direction, DlpDetector


class Mine(DlpDetector):
    name = "token_patterns"
    description = "a contrib detector that reuses a built-in's name"
    direction = Direction.OUTBOUND

    def scan(self, data, context):
        return []


@hookimpl
def bot_bottle_register_dlp_detectors():
    return [Registration("token_patterns", Mine, "same name as the built-in")]
"""

FAILING = """\
from bot_bottle import hookimpl


@hookimpl
def bot_bottle_register_dlp_detectors():
    raise RuntimeError("rule file missing")
"""

CONTRIB_ONLY = CONFLICTING.replace('"token_patterns"', '"internal_hostnames"')


def _home(tmp_path: Path, plugin: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_BOTTLE_")}
    env["BOT_BOTTLE_HOME"] = str(tmp_path / "home")
    subprocess.run([*BB, "init"], env=env, check=True, capture_output=True, timeout=120)
    if plugin is not None:
        d = tmp_path / "home" / "contrib" / "extra"
        d.mkdir(parents=True)
        (d / "plugin.py").write_text(plugin)
    return env


def _bb(
    env: dict[str, str], *args: str, stdin: str = ""
) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [*BB, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    return r, time.monotonic() - t0


def test_without_extra_plugins_the_gitlab_token_is_blocked(tmp_path: Path) -> None:
    r, _ = _bb(_home(tmp_path, None), "dlp", "scan", "-", stdin=f"t={GITLAB_TOKEN}\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "token_patterns/gitlab-pat" in r.stdout


@pytest.mark.parametrize(
    "command", [["dlp", "scan", "-"], ["start", "demo", "--dry-run"], ["run", "demo", "--", "true"]]
)
def test_a_detector_name_two_plugins_register_is_an_error(
    tmp_path: Path, command: list[str]
) -> None:
    r, _ = _bb(_home(tmp_path, CONFLICTING), *command, stdin=f"t={GITLAB_TOKEN}\n")
    assert r.returncode != 0 and "no findings" not in r.stdout
    assert "'token_patterns' is registered by more than one plugin" in r.stderr
    assert "bot-bottle-dlp" in r.stderr and "contrib" in r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "command", [["dlp", "scan", "-"], ["start", "demo", "--dry-run"], ["run", "demo", "--", "true"]]
)
def test_a_failing_detector_plugin_is_an_error_where_it_scans(
    tmp_path: Path, command: list[str]
) -> None:
    r, _ = _bb(_home(tmp_path, FAILING), *command, stdin=f"t={GITLAB_TOKEN}\n")
    assert r.returncode != 0 and "no findings" not in r.stdout
    assert "plugin 'extra' (contrib) failed, so its dlp detectors are missing" in r.stderr
    assert "rule file missing" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_failed_plugin_is_a_warning_once_on_other_commands(tmp_path: Path) -> None:
    r, _ = _bb(_home(tmp_path, FAILING), "plugins", "list")
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: plugin 'extra'")]
    assert len(warnings) == 1, r.stderr
    assert "rule file missing" in warnings[0]


def test_a_contrib_detector_scans_on_the_host(tmp_path: Path) -> None:
    r, _ = _bb(_home(tmp_path, CONTRIB_ONLY), "dlp", "scan", "-", stdin=f"t={GITLAB_TOKEN}\n")
    assert r.returncode == 1, r.stderr
    assert "token_patterns/gitlab-pat" in r.stdout


@pytest.mark.parametrize("command", [["start", "demo", "--dry-run"], ["run", "demo", "--", "true"]])
def test_a_contrib_detector_is_refused_at_plan_time_in_seconds(
    tmp_path: Path, command: list[str]
) -> None:
    env = _home(tmp_path, CONTRIB_ONLY)
    r, took = _bb(env, *command)
    assert r.returncode != 0
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: dlp detector 'internal_hostnames' comes from the contrib plugin 'extra', "
        "which the sidecar bundle cannot carry"
    ], r.stderr
    assert took < 30  # not the 60 s egress start timeout it used to be
    state = tmp_path / "home" / "state"
    assert not state.exists() or not any(state.iterdir())


def test_a_plugin_that_fails_to_import_is_a_warning_and_the_rest_still_scans(
    tmp_path: Path,
) -> None:
    # Whether it held detectors cannot be known: a loud warning, not a refusal.
    env = _home(tmp_path, 'raise RuntimeError("missing libfoo.so")\n')
    r, _ = _bb(env, "dlp", "scan", "-", stdin=f"t={GITLAB_TOKEN}\n")
    assert r.returncode == 1, r.stderr
    assert "token_patterns/gitlab-pat" in r.stdout
    (warning,) = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert "plugin 'extra' (contrib) failed" in warning and "missing libfoo.so" in warning
