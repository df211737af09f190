"""Provisioned deploy keys in real bottles: a bottle whose git-gate repo key
is ``{provider: gitea, ...}`` (or github, gitlab) gets a fresh key from a
(spec-validated, fake) forge at launch, git-gate pushes with it to a real sshd upstream, and the
key is revoked at teardown; a SIGKILLed launcher's key is revoked by
``cleanup``; a revocation the forge refuses fails the run and ``cleanup``
retries it.

The fake forge (tests/fake_forge.py) writes every live key into the sshd's
``authorized_keys``, as a forge's SSH server honours its deploy keys, so
"revoked" is checked where it matters: sshd refuses the key afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot_bottle.gitgate.ledger import KeyLedger
from tests.bottle_kit import HOST_CA, launched, outside_network, write_agent
from tests.fake_forge import FakeForge, Key, Kind, fake_forge
from tests.sshd_upstream import SshRemote, ssh_remote

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

TOKEN = "gitea-REAL-api-token-in-host-env-51c2"
TOKEN_VAR = "BB_TEST_GITEA_TOKEN"
BB = [sys.executable, "-m", "bot_bottle"]


PROVIDERS: tuple[Kind, ...] = ("gitea", "github", "gitlab")


@dataclass
class World:
    remote: SshRemote
    forges: dict[Kind, FakeForge]
    tmp: Path

    @property
    def forge(self) -> FakeForge:
        return self.forges["gitea"]


@pytest.fixture(scope="module")
def world(
    docker_client: docker.DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("forge-keys")
    with contextlib.ExitStack() as stack:
        gateway = stack.enter_context(outside_network(docker_client))
        remote = stack.enter_context(ssh_remote(tmp / "ssh", gateway))
        remote.new_repo("proj")
        # owner/repo as each forge reads them from the url's path.
        project = remote.bare("proj").as_posix().strip("/").removesuffix(".git")
        group, _, name = project.rpartition("/")
        where: dict[Kind, tuple[str, str]] = {
            "gitea": ("repos", "proj"),
            "github": ("repos", "proj"),
            "gitlab": (group, name),
        }
        forges: dict[Kind, FakeForge] = {
            kind: stack.enter_context(
                fake_forge(tmp / kind, kind, token=TOKEN, repos={where[kind]})
            )
            for kind in PROVIDERS
        }
        authorized = remote.root / "authorized_keys"
        authorized.write_text("")  # only what a forge hands out gets in

        def publish(_keys: list[Key]) -> None:
            every = [k for f in forges.values() for k in f.live_keys()]
            authorized.write_text("".join(f"{k.key}\n" for k in every))

        for forge in forges.values():
            forge.on_change = publish
        yield World(remote, forges, tmp)
        for kind, forge in forges.items():
            assert forge.violations == [], f"requests the real {kind} would reject"


def _bottle_home(world: World, home: Path, provider: Kind = "gitea") -> Path:
    r, f = world.remote, world.forges[provider]
    write_agent(
        home,
        "forge-bot",
        "---\nagent_provider:\n  template: shell\n"
        "git_user:\n  name: Bottled Shell\n  email: shell@bottle.test\n"
        f"git_gate:\n  repos:\n    - name: proj\n      url: {r.url('proj')}\n"
        f"      host_key: {r.host_key}\n"
        f"      key: {{provider: {provider}, base_url: '{f.base_url}', token_ref: {TOKEN_VAR},"
        f" ca_file: '{f.ca_pem}'}}\n---\n",
    )
    for forge in world.forges.values():
        forge.fail_delete = False
        assert forge.live_keys() == []
    return home


@pytest.fixture
def home(world: World, tmp_path: Path) -> Path:
    return _bottle_home(world, tmp_path / "bot-bottle-home")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_BOTTLE_")}
    env["BOT_BOTTLE_HOME"] = str(home)
    env[TOKEN_VAR] = TOKEN
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    return env


def _bb(home: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BB, *args], env=_env(home), capture_output=True, text=True, timeout=timeout, check=False
    )


def _ssh_ok(remote: SshRemote, key: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    known = tmp / "known_hosts"
    known.write_text(f"[{remote.host}]:{remote.port} {remote.host_key}\n")
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "ConnectTimeout=10",
         "-p", str(remote.port), f"{remote.user}@{remote.host}", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _states(home: Path) -> list[Path]:
    root = home / "state"
    return sorted(root.iterdir()) if root.exists() else []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_bottle_pushes_with_a_provisioned_key_that_is_revoked_at_teardown(
    world: World, provider: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot_bottle.state import StateDir

    home = _bottle_home(world, tmp_path / "bot-bottle-home", provider)
    remote, forge = world.remote, world.forges[provider]
    # The launcher reads the token from its own environment, as 'run' does.
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    captured = tmp_path / "captured_key"
    with launched(home, "forge-bot", host_env=_env(home)) as bottle:
        slug = bottle.plan.slug
        (key,) = forge.live_keys()
        assert key.title == f"bot-bottle:{slug}:proj" and not key.read_only
        assert (key.owner, key.repo) in forge.repos
        (entry,) = KeyLedger(StateDir.for_slug(slug).path).entries()
        assert entry.record.key_id == str(key.id)
        assert TOKEN not in entry.path.read_text()
        # The private key exists only in the bottle's secret store (0600).
        staged = StateDir.for_slug(slug).run_dir / "keys" / "proj"
        assert oct(staged.stat().st_mode & 0o777) == "0o600"
        captured.write_bytes(staged.read_bytes())
        captured.chmod(0o600)
        ok = _ssh_ok(remote, captured, tmp_path)
        assert ok.returncode == 0, ok.stderr  # the sshd takes the key while the bottle lives

        bottle.as_agent(
            "bash",
            "-c",
            f"set -e; git clone -q {remote.url('proj')} ~/proj; cd ~/proj; "
            f"echo done > {provider}.txt; git add {provider}.txt; "
            f"git commit -qm 'agent work via {provider}'; git push -q origin HEAD:main",
        )
        assert remote.log_of(remote.bare("proj"))[0] == f"agent work via {provider}"
        assert TOKEN not in bottle.as_agent("env")

    assert forge.live_keys() == []
    assert (remote.root / "authorized_keys").read_text() == ""
    refused = _ssh_ok(remote, captured, tmp_path)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    methods = [m for m, _ in forge.seen]
    assert methods == ["POST", "DELETE"], forge.seen


def _wait_for_recorded_key(home: Path, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        for state in _states(home):
            ids = [e.record.key_id for e in KeyLedger(state).entries()]
            if ids and ids[0]:
                return state.name
        if proc.poll() is not None:
            pytest.fail(f"the launcher exited early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    pytest.fail("no key was ever recorded in the state dir")


def test_cleanup_revokes_the_key_of_a_sigkilled_launcher(
    world: World, home: Path, docker_client: docker.DockerClient
) -> None:
    forge = world.forge
    proc = subprocess.Popen(
        [*BB, "run", "forge-bot", "--", "sleep", "600"],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        slug = _wait_for_recorded_key(home, proc)
    finally:
        proc.kill()  # SIGKILL: no teardown, the key stays registered
        proc.wait()
    (orphan,) = forge.live_keys()
    assert orphan.title == f"bot-bottle:{slug}:proj"

    r = _bb(home, "cleanup", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"deploy key gitea key {orphan.id} for repo 'proj' of bottle {slug}" in r.stdout
    assert forge.live_keys() == []
    assert _states(home) == []
    (decision,) = [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]
    assert decision["action"] == "deploykey.revoke" and decision["bottle"] == slug
    assert decision["key_id"] == str(orphan.id)
    flt: dict[str, Any] = {"label": f"bot-bottle.slug={slug}"}
    assert docker_client.containers.list(all=True, filters=flt) == []


def test_a_revocation_the_forge_refuses_fails_the_run_and_cleanup_retries_it(
    world: World, home: Path
) -> None:
    forge = world.forge
    forge.fail_delete = True
    r = _bb(home, "run", "forge-bot", "--", "true")
    assert r.returncode != 0
    assert "error: the bottle is gone but these deploy keys could not be revoked" in r.stderr
    assert "answered 500" in r.stderr and "hint: run 'bot-bottle cleanup'" in r.stderr
    assert "Traceback" not in r.stderr
    assert TOKEN not in r.stdout + r.stderr
    (left,) = forge.live_keys()
    (state,) = _states(home)  # kept for the retry
    (entry,) = KeyLedger(state).entries()
    assert entry.record.key_id == str(left.id) and "500" in (entry.record.error or "")

    # The forge still fails: cleanup says so, keeps the record, exits non-zero.
    again = _bb(home, "cleanup", "--yes")
    assert again.returncode == 1 and "error: could not revoke gitea key" in again.stderr
    assert _states(home) == [state] and len(KeyLedger(state).entries()) == 1

    forge.fail_delete = False
    done = _bb(home, "cleanup", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert forge.live_keys() == [] and _states(home) == []
    # Nor in any file the runs left in the home (logs, audit, state).
    leaked = [p for p in home.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []
