"""``bot-bottle start AGENT --backend kubernetes --dry-run --json``: the plan
with the rendered objects, from the real CLI, with no cluster configured
(no kube config, no API server: nothing is contacted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

BB = [sys.executable, "-m", "bot_bottle"]
TOKEN = "dry-run-token-5d1c88"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "BOT_BOTTLE_K8S_"))}
    env["BOT_BOTTLE_HOME"] = str(tmp_path / "home")
    # No kube config anywhere: a dry run must not look for one.
    env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")
    env["HOME"] = str(tmp_path)
    env["DRY_TOKEN"] = TOKEN
    home = tmp_path / "home"
    (home / "bottles").mkdir(parents=True)
    (home / "agents").mkdir()
    (home / "bottles/b.md").write_text(
        "---\nagent_provider:\n  template: shell\negress:\n  routes:\n"
        "    - host: api.example.test\n      auth: {scheme: Bearer, token_ref: DRY_TOKEN}\n---\n"
    )
    (home / "agents/k.md").write_text("---\nbottle: b\n---\n")
    return env


def _dry_run(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BB, "start", "k", "--backend", "kubernetes", "--dry-run", "--json", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dry_run_prints_the_rendered_objects(env: dict[str, str], tmp_path: Path) -> None:
    r = _dry_run(env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["plan"]["backend"] == "kubernetes"
    backend = doc["backend"]
    objects: list[dict[str, Any]] = backend["objects"]
    assert all({"apiVersion", "kind", "metadata"} <= set(o) for o in objects)
    kinds = [o["kind"] for o in objects]
    assert kinds.count("Pod") == 2 and kinds.count("NetworkPolicy") == 3
    assert backend["namespace"] == "bot-bottle"
    # Secret values are hidden in what a dry run prints.
    assert TOKEN not in r.stdout
    # What it prints is what a server of the newest served minor accepts.
    for obj in objects:
        assert kubernetes_validate.validate(obj, "1.35", strict=True) == "1.35"
    # Nothing was created on the host either.
    assert not (tmp_path / "home/state").exists()


def test_options_come_from_the_environment(env: dict[str, str]) -> None:
    env = {
        **env,
        "BOT_BOTTLE_K8S_NAMESPACE": "team-a",
        "BOT_BOTTLE_K8S_USER_NAMESPACE": "true",
        "BOT_BOTTLE_K8S_POD_CIDRS": "10.42.0.0/16",
        "BOT_BOTTLE_K8S_SECCOMP": "runtime-default",
    }
    r = _dry_run(env, "--no-gvisor")
    assert r.returncode == 0, r.stderr
    objects = json.loads(r.stdout)["backend"]["objects"]
    assert {o["metadata"]["namespace"] for o in objects} == {"team-a"}
    agent = next(
        o for o in objects if o["metadata"]["name"].endswith("-agent") and o["kind"] == "Pod"
    )
    assert agent["spec"]["hostUsers"] is False
    assert "runtimeClassName" not in agent["spec"]
    assert agent["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    policy = next(
        o
        for o in objects
        if o["metadata"]["name"].endswith("-sidecars") and o["kind"] == "NetworkPolicy"
    )
    assert "10.42.0.0/16" in policy["spec"]["egress"][1]["to"][0]["ipBlock"]["except"]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("BOT_BOTTLE_K8S_POD_CIDRS", "10.42.0.0/33", "is not a CIDR range"),
        ("BOT_BOTTLE_K8S_NAMESPACE", "Team_A", "is not a namespace name"),
        ("BOT_BOTTLE_K8S_SECCOMP", "unconfined", "neither localhost nor runtime-default"),
        ("BOT_BOTTLE_K8S_DEADLINE_SECONDS", "5", "seconds >= 60"),
    ],
)
def test_a_bad_option_is_a_clear_error(
    env: dict[str, str], name: str, value: str, words: str
) -> None:
    r = _dry_run({**env, name: value})
    assert r.returncode != 0
    assert f"error: {name}" in r.stderr and words in r.stderr
    assert "Traceback" not in r.stderr
