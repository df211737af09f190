"""Commit and resume with real bottles: ``bot-bottle run``/``commit``/
``resume``/``snapshots`` as a user runs them (the CLI in a subprocess), on
the Docker engine, with a local HTTPS upstream (tests/fake_anthropic.py) on
the gateway of a network the test creates, reached through the bottle's
``extra_hosts`` and ``egress.upstream_ca``.

A bottle "runs" a command that waits for ``/tmp/bb-stop`` (written by the
test through ``docker exec``) and exits with the code in it; the test
drives the agent's home through ``docker exec`` as the agent user.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.bottle_kit import HOST_CA, outside_network, write_agent
from tests.fake_anthropic import FakeAnthropic, fake_anthropic

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

BB = str(Path(sys.executable).parent / "bot-bottle")
TOKEN = "sk-ant-oat01-snapshot-test-token-" + secrets.token_hex(8)
STASH = "stash-" + secrets.token_hex(16)
#: A blocking token_patterns rule (an AWS access key id, not AWS's example).
FAKE_AWS = "aws_access_key_id = AKIAC2GKUKXJ54644TYI"
GUEST_CA = "/usr/local/share/ca-certificates/bot-bottle-ca.crt"
WAIT = (
    "touch /tmp/bb-ready; while [ ! -e /tmp/bb-stop ]; do sleep 0.1; done; "
    'exit "$(cat /tmp/bb-stop)"'
)
CURL = (
    "curl -sS -m 20 -o /dev/null -w '%{http_code}' https://api.anthropic.com/v1/messages "
    '-H \'content-type: application/json\' -d \'{"model":"m","messages":[]}\''
)


@dataclass
class World:
    home: Path
    api: FakeAnthropic
    env: dict[str, str]


def _bottle_md(world_gateway: str, ca: Path, *, supervise: bool = True) -> str:
    return (
        "---\nagent_provider:\n  template: shell\n"
        "env:\n  STASH: '${STASH_SECRET}'\n"
        f"supervise: {'true' if supervise else 'false'}\n"
        f"egress:\n  upstream_ca: {ca}\n  routes:\n    - host: api.anthropic.com\n"
        "      auth: {scheme: Bearer, token_ref: SNAP_TOKEN}\n"
        f"extra_hosts:\n  api.anthropic.com: {world_gateway}\n---\n"
    )


@pytest.fixture(scope="module")
def world(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("snapshots")
    with (
        outside_network(docker_client) as gateway,
        fake_anthropic(
            tmp / "pki", hosts=["api.anthropic.com"], reply="ok", bind=gateway, port=443
        ) as api,
    ):
        home = tmp / "home"
        write_agent(home, "snap", _bottle_md(gateway, api.ca_pem))
        env = {
            **os.environ,
            "BOT_BOTTLE_HOME": str(home),
            "SNAP_TOKEN": TOKEN,
            "STASH_SECRET": STASH,
        }
        if HOST_CA.exists():
            env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
        world = World(home, api, env)
        (home / "gateway").write_text(gateway)
        yield world
        _remove_leftovers(docker_client, world)


def _home_label(world: World) -> str:
    from bot_bottle.state import home_id

    return home_id(world.home / "state")


def _remove_leftovers(client: docker.DockerClient, world: World) -> None:
    """What a failed test may leave: only this home's containers and images."""
    import docker.errors

    flt: dict[str, Any] = {"label": f"bot-bottle.home={_home_label(world)}"}
    for c in client.containers.list(all=True, filters=flt):
        c.remove(force=True)
    for n in client.networks.list(filters=flt):
        n.remove()
    for image in client.images.list(filters=flt):
        with suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)


def cli(world: World, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BB, *args], env=world.env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Bg:
    proc: subprocess.Popen[str]
    container: Any
    slug: str

    def sh(self, script: str, *, user: str = "agent", stdin: bytes | None = None) -> str:
        argv = ["docker", "exec", "-i", "-u", user, self.container.id, "sh", "-c", script]
        out = subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=60)
        text = (out.stdout + out.stderr).decode("utf-8", "replace")
        assert out.returncode == 0, f"{script!r} exited {out.returncode}: {text}"
        return out.stdout.decode("utf-8", "replace")

    def stop(self, code: int = 0) -> tuple[int, str]:
        self.sh(f"echo {code} > /tmp/bb-stop", user="root")
        _, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, err


@contextmanager
def background(world: World, client: docker.DockerClient, *args: str) -> Iterator[Bg]:
    """``bot-bottle <args> -- sh -c WAIT`` in the background, once its agent is up."""
    flt: dict[str, Any] = {
        "label": [f"bot-bottle.home={_home_label(world)}", "bot-bottle.role=agent"]
    }
    before = {c.id for c in client.containers.list(all=True, filters=flt)}
    proc = subprocess.Popen(
        [BB, *args, "--", "sh", "-c", WAIT],
        env=world.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        container = None
        while container is None:
            assert proc.poll() is None, f"{args} ended early: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, f"{args}: no agent came up"
            for c in client.containers.list(filters=flt):
                if c.id in before:
                    continue
                probe = c.exec_run(["test", "-e", "/tmp/bb-ready"])
                if probe.exit_code == 0:
                    container = c
            time.sleep(0.3)
        yield Bg(proc, container, container.labels["bot-bottle.slug"])
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _search_image(
    client: docker.DockerClient, ref: str, needles: Mapping[str, bytes], tmp: Path
) -> tuple[set[str], set[str], int]:
    """Search every file of every layer of ``ref`` (``docker save``) for
    ``needles``; return (names of the needles found, file paths, bytes read)."""
    saved = tmp / "image.tar"
    with saved.open("wb") as fh:
        for chunk in client.images.get(ref).save():
            fh.write(chunk)
    found: set[str] = set()
    paths: set[str] = set()
    total = 0
    with tarfile.open(saved) as outer:
        for member in outer.getmembers():
            blob = outer.extractfile(member) if member.isfile() else None
            if blob is None:
                continue
            try:
                layer = tarfile.open(fileobj=blob)  # noqa: SIM115 - closed by the with below
            except tarfile.TarError:
                continue
            with layer:
                for m in layer:
                    paths.add("/" + m.name.lstrip("./"))
                    f = layer.extractfile(m) if m.isfile() else None
                    data = f.read() if f is not None else b""
                    total += len(data)
                    found |= {k for k, v in needles.items() if v in data}
    saved.unlink()
    return found, paths, total


def _bearers(api: FakeAnthropic) -> list[str]:
    return [r.headers.get("authorization", "") for r in api.messages()]


def _record(world: World, name: str) -> dict[str, Any]:
    return json.loads((world.home / "snapshots" / f"{name}.json").read_text())


# -- the whole cycle -------------------------------------------------------------------


def test_commit_refuses_secrets_then_resume_keeps_the_home_not_the_secrets(
    world: World, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    with background(world, docker_client, "run", "snap") as bottle:
        # Work worth keeping: a file, a "package" (a script on the agent's PATH).
        bottle.sh(
            "echo kept-notes > ~/notes.txt && mkdir -p ~/.local/bin && "
            "printf '#!/bin/sh\\necho hello-from-package\\n' > ~/.local/bin/hello && "
            "chmod +x ~/.local/bin/hello && echo scratch > /tmp/scratch && "
            "echo scratch > /var/tmp/scratch"
        )
        assert bottle.sh(CURL) == "200"
        assert _bearers(world.api)[-1] == f"Bearer {TOKEN}"
        old_ca = bottle.sh(f"cat {GUEST_CA}")
        state = world.home / "state" / bottle.slug
        pem = (state / "run" / "ca" / "mitmproxy-ca.pem").read_text()
        # A line of the private key's body (the PEM holds key and certificate).
        key_lines = pem.split("PRIVATE KEY-----\n", 1)[1].splitlines()
        ca_key = key_lines[1].encode()
        # An approved capability block, as the console writes it.
        (state / "capabilities.json").write_text(
            json.dumps(
                [
                    {
                        "proposal": "p1",
                        "dockerfile": "RUN echo capability-ok > /etc/bb-capability",
                        "approved_at": "2026-12-04T10:00:00Z",
                        "comment": None,
                    }
                ]
            )
        )

        # Secrets in the agent's files: the commit is refused, naming them.
        bottle.sh(f"mkdir -p ~/.cache && echo '{FAKE_AWS}' > ~/.cache/x")
        bottle.sh("cat > ~/stash-copy.txt", stdin=f"copied: {STASH}\n".encode())
        refused = cli(world, "commit", bottle.slug, "--name", "snap1")
        assert refused.returncode == 1, refused.stderr
        assert "/home/agent/.cache/x" in refused.stderr
        assert "/home/agent/stash-copy.txt" in refused.stderr
        assert "known_secrets" in refused.stderr and "aws-access-key-id" in refused.stderr
        assert STASH not in refused.stderr and "AKIAC2GKUKXJ54644TYI" not in refused.stderr
        assert not (world.home / "snapshots" / "snap1.json").exists()

        bottle.sh("rm ~/.cache/x ~/stash-copy.txt")
        done = cli(world, "commit", bottle.slug, "--name", "snap1")
        assert done.returncode == 0, done.stderr
        code, err = bottle.stop(0)
        assert code == 0, err

    record = _record(world, "snap1")
    assert record["agent"] == "snap" and record["source_slug"] == bottle.slug
    assert record["credentials"] == ["SNAP_TOKEN", "STASH"]
    assert [r["host"] for r in record["routes"]] == ["api.anthropic.com"]
    assert record["capabilities"][0]["proposal"] == "p1"
    assert TOKEN not in json.dumps(record) and STASH not in json.dumps(record)

    # The frozen image: no CA key, no token, no env secret, nothing from /tmp.
    needles = {
        "ca key": ca_key,
        "token": TOKEN.encode(),
        "env secret": STASH.encode(),
        "old CA cert": old_ca.encode().strip(),
        "notes": b"kept-notes",
    }
    found, paths, total = _search_image(docker_client, record["image"], needles, tmp_path)
    assert total > 10_000_000  # really the whole filesystem
    assert found == {"notes"}
    assert "/home/agent/notes.txt" in paths and "/tmp" in paths
    assert not [p for p in paths if p.startswith(("/tmp/", "/var/tmp/"))]
    config = docker_client.images.get(record["image"]).attrs["Config"]
    assert not any(STASH in e for e in config.get("Env") or [])

    listed = json.loads(cli(world, "snapshots", "--json").stdout)
    assert [r["name"] for r in listed] == ["snap1"] and listed[0]["image_present"]

    # A dry run shows the plan and builds nothing (not the capability image).
    dry = cli(world, "resume", "snap1", "--dry-run")
    assert dry.returncode == 0 and "resuming snapshot snap1" in dry.stderr, dry.stderr
    snap_flt: dict[str, Any] = {
        "label": ["bot-bottle.snapshot=snap1", f"bot-bottle.home={_home_label(world)}"]
    }
    assert [i.id for i in docker_client.images.list(filters=snap_flt)] == [record["image"]]

    seen = len(world.api.messages())
    with background(world, docker_client, "resume", "snap1") as resumed:
        assert resumed.sh("cat ~/notes.txt") == "kept-notes\n"
        assert resumed.sh("~/.local/bin/hello") == "hello-from-package\n"
        assert resumed.sh("ls -A /tmp /var/tmp") == "/tmp:\nbb-ready\n\n/var/tmp:\n"
        assert resumed.sh("cat /etc/bb-capability") == "capability-ok\n"
        new_ca = resumed.sh(f"cat {GUEST_CA}")
        assert new_ca != old_ca and "BEGIN CERTIFICATE" in new_ca
        # Only the new CA is trusted: the old one left the system bundle.
        bundle = resumed.sh("cat /etc/ssl/certs/ca-certificates.crt")
        assert old_ca.strip() not in bundle and new_ca.strip() in bundle
        assert resumed.sh(CURL) == "200"
        assert len(world.api.messages()) == seen + 1
        assert _bearers(world.api)[-1] == f"Bearer {TOKEN}"
        # The token is in no file of the agent and no environment it can read.
        found = subprocess.run(
            ["docker", "exec", "-i", "-u", "root", resumed.container.id,
             "grep", "-rlsF", "-f", "-", "/home", "/tmp", "/etc", "/usr/local"],
            input=TOKEN.encode(), capture_output=True, check=False,
        )  # fmt: skip
        assert found.stdout.decode().split() == []
        environs = resumed.sh("cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'")
        assert "HOME=" in environs and TOKEN not in environs
        meta = json.loads((world.home / "state" / resumed.slug / "metadata.json").read_text())
        assert meta["snapshot"] == "snap1"

        # A resumed bottle commits like any other; its snapshot names its parent.
        again = cli(world, "commit", resumed.slug, "--name", "snap2")
        assert again.returncode == 0, again.stderr
        assert _record(world, "snap2")["parent"] == "snap1"

        # In use: 'snapshots rm' refuses.
        busy = cli(world, "snapshots", "rm", "snap1")
        assert busy.returncode == 1 and "in use by" in busy.stderr, busy.stderr
        code, err = resumed.stop(0)
        assert code == 0, err

    # The manifest changed since: headless resume asks for a decision.
    gateway = (world.home / "gateway").read_text()
    write_agent(world.home, "snap", _bottle_md(gateway, world.api.ca_pem, supervise=False))
    try:
        undecided = cli(world, "resume", "snap1", "--", "true")
        assert undecided.returncode == 1
        assert "supervise: true -> false" in undecided.stderr
        assert "--use-snapshot-policy" in undecided.stderr
        kept = cli(world, "resume", "snap1", "--use-snapshot-policy", "--", "sh", "-c",
                   "test -e ~/.bot-bottle/supervise && cat ~/notes.txt")  # fmt: skip
        assert kept.returncode == 0 and kept.stdout == "kept-notes\n", kept.stderr
        current = cli(world, "resume", "snap1", "--use-current-manifest", "--", "cat",
                      "/home/agent/notes.txt")  # fmt: skip
        assert current.returncode == 0, current.stderr
        assert "supervise: off" in current.stderr
    finally:
        write_agent(world.home, "snap", _bottle_md(gateway, world.api.ca_pem))

    assert cli(world, "snapshots", "rm", "snap2").returncode == 0
    image = record["image"]
    removed = cli(world, "snapshots", "rm", "snap1")
    assert removed.returncode == 0, removed.stderr
    assert not (world.home / "snapshots" / "snap1.json").exists()
    assert not any(i.id == image for i in docker_client.images.list(all=True))


# -- preserved after a non-zero exit -------------------------------------------------------


def test_a_bottle_that_exits_non_zero_resumes_and_cleanup_keeps_it(
    world: World, docker_client: docker.DockerClient
) -> None:
    from bot_bottle.cli.cleanup_cmd import _dangling_snapshot_images, remove_preserved
    from bot_bottle.plugins import PluginHost
    from bot_bottle.state import StateDir
    from bot_bottle_docker.backend import DockerBackend

    with background(world, docker_client, "run", "snap") as bottle:
        bottle.sh("echo unfinished > ~/work.txt")
        code, err = bottle.stop(7)
        assert code == 7 and f"state kept for {bottle.slug}" in err
    state = world.home / "state" / bottle.slug
    assert (state / "preserve").exists()
    assert [r["host"] for r in json.loads((state / "egress.json").read_text())["routes"]] == [
        "api.anthropic.com"
    ]
    agent = docker_client.containers.get(bottle.container.id)
    assert agent.status == "exited"  # stopped, not removed
    flt: dict[str, Any] = {"label": f"bot-bottle.slug={bottle.slug}"}
    roles = {
        c.labels["bot-bottle.role"] for c in docker_client.containers.list(all=True, filters=flt)
    }
    assert roles == {"agent"}  # the sidecars and relay went as usual

    mp = pytest.MonkeyPatch()
    mp.setenv("BOT_BOTTLE_HOME", str(world.home))
    try:
        orphans = [i for i in DockerBackend().find_orphans() if i.slug == bottle.slug]
        assert orphans == []  # cleanup leaves a preserved bottle alone
        # ... and so does another home's cleanup (its launcher is gone, but
        # a stopped agent is a kept one).
        mp.setenv("BOT_BOTTLE_HOME", str(world.home.parent / "another-home"))
        orphans = [i for i in DockerBackend().find_orphans() if i.slug == bottle.slug]
        assert orphans == []
        mp.setenv("BOT_BOTTLE_HOME", str(world.home))

        dry = cli(world, "resume", bottle.slug, "--dry-run")
        assert dry.returncode == 0 and "a dry run commits nothing" in dry.stderr
        assert (state / "preserve").exists()
        assert not (world.home / "snapshots" / f"{bottle.slug}.json").exists()

        out = cli(world, "resume", bottle.slug, "--", "cat", "/home/agent/work.txt")
        assert out.returncode == 0 and out.stdout == "unfinished\n", out.stderr
        assert not state.exists()
        assert docker_client.containers.list(all=True, filters=flt) == []
        record = _record(world, bottle.slug)
        assert record["source_slug"] == bottle.slug

        # cleanup never lists what 'snapshots' lists; an image no record names it does.
        host = PluginHost().load()
        assert [i.ref for _, i in _dangling_snapshot_images(host)] == []
        (world.home / "snapshots" / f"{bottle.slug}.json").unlink()
        dangling = [i.ref for _, i in _dangling_snapshot_images(host)]
        assert dangling == [record["image"]]
        for freezer, image in _dangling_snapshot_images(host):
            freezer.remove(image)
        assert _dangling_snapshot_images(host) == []

        # 'cleanup --preserved' discards a kept bottle: its agent and state dir.
        failed = cli(world, "run", "snap", "--", "sh", "-c", "exit 5")
        assert failed.returncode == 5
        (kept,) = [StateDir(p) for p in (world.home / "state").iterdir()]
        assert kept.preserved
        kept_flt: dict[str, Any] = {"label": f"bot-bottle.slug={kept.slug}"}
        assert len(docker_client.containers.list(all=True, filters=kept_flt)) == 1
        remove_preserved(host, kept)
        assert not kept.path.exists()
        assert docker_client.containers.list(all=True, filters=kept_flt) == []
    finally:
        mp.undo()


def test_commit_and_resume_errors_are_clear(world: World) -> None:
    missing = cli(world, "resume", "no-such-snapshot", "--", "true")
    assert missing.returncode == 1 and "no snapshot and no preserved bottle" in missing.stderr
    bad = cli(world, "commit", "snap-000000", "--name", "Bad Name")
    assert bad.returncode == 1 and "not a valid snapshot name" in bad.stderr
    gone = cli(world, "commit", "snap-000000")
    assert gone.returncode == 1 and "no bottle snap-000000" in gone.stderr
    assert "Traceback" not in missing.stderr + bad.stderr + gone.stderr


# -- provisioning a home the agent controls ---------------------------------------------------


def test_provisioning_never_follows_a_link_the_agent_planted(
    world: World, docker_client: docker.DockerClient
) -> None:
    """A resumed home is the agent's work: a link it planted where
    provisioning writes (``~/.bot-bottle/supervise``) must not lead a root
    write into a system directory. Provisioning runs again on the live
    bottle, as a resume runs it on the snapshot."""
    from bot_bottle import provider_kit as kit
    from bot_bottle.launcher import provision_bottle
    from tests.bottle_kit import launched

    env: Mapping[str, str] = {**world.env}
    with launched(world.home, "snap", host_env=env) as bottle:
        bottle.as_agent("sh", "-c", "rm -rf ~/.bot-bottle && ln -s /usr/local/lib ~/.bot-bottle")
        with pytest.raises(kit.ProvisionError, match="Permission denied"):
            provision_bottle(bottle.provider, bottle.running, bottle.ctx)
        check = bottle.running.exec(["test", "-e", "/usr/local/lib/supervise"], user="root")
        assert check.exit_code == 1  # nothing was written through the link
        # A link to a file the agent cannot write: not written either.
        bottle.as_agent("sh", "-c", "rm ~/.bot-bottle && mkdir ~/.bot-bottle && "
                        "ln -s /etc/passwd ~/.bot-bottle/supervise")  # fmt: skip
        before = bottle.running.exec(["cat", "/etc/passwd"], user="root").stdout
        with pytest.raises(kit.ProvisionError):
            provision_bottle(bottle.provider, bottle.running, bottle.ctx)
        assert bottle.running.exec(["cat", "/etc/passwd"], user="root").stdout == before


def test_the_freezer_leaves_out_bind_mounts_and_scratch_and_scans_only_changes(
    docker_client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Docker freezer on a plain labelled container (no bottle needed):
    a bind-mounted workspace is the host's and is neither scanned nor frozen."""
    from bot_bottle.state import home_id
    from bot_bottle_docker.freezer import DockerFreezer

    monkeypatch.setenv("BOT_BOTTLE_HOME", str(tmp_path / "home"))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "host-file").write_text("host-only-content\n")
    slug = f"frz-{secrets.token_hex(3)}"
    labels = {
        "bot-bottle.backend": "docker",
        "bot-bottle.slug": slug,
        "bot-bottle.role": "agent",
        "bot-bottle.home": home_id(),
    }
    agent = docker_client.containers.run(
        "bot-bottle/base:trixie",
        ["sleep", "120"],
        detach=True,
        labels=labels,
        network_mode="none",
        volumes={str(workspace): {"bind": "/workspace", "mode": "rw"}},
    )
    freezer = DockerFreezer()
    frozen = None
    try:
        agent.exec_run(["sh", "-c", "echo mine > /root/kept && echo s > /tmp/scratch"])
        scanned: list[str] = []

        def scan(path: str, chunks: Iterable[bytes]) -> list[str]:
            scanned.append(path)
            return [] if b"host-only" not in b"".join(chunks) else ["host file scanned"]

        frozen = freezer.commit(
            slug, ref=f"bbtest-frozen/{slug}:1", scan=scan, ca_cert_path=GUEST_CA
        )
        assert "/root/kept" in scanned
        assert not [p for p in scanned if p.startswith(("/workspace/", "/tmp/"))]
        assert freezer.in_use(frozen) == []
        out = docker_client.containers.run(
            frozen.ref,
            ["sh", "-c", "cat /root/kept; ls -A /workspace /tmp"],
            remove=True,
            network_disabled=True,
        )
        assert out.decode() == "mine\n/tmp:\n\n/workspace:\n"
        assert frozen.ref in freezer.frozen_refs()
    finally:
        agent.remove(force=True)
        if frozen is not None:
            freezer.remove(frozen)
    assert frozen is not None and not freezer.exists(frozen)
