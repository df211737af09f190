"""The smolmachines freezer: the guest's side against the contract fake (no
guest boots here), everything on the host for real: the Docker bundle, the
Docker freezer's filter and scan, ``docker import`` and a container started
from the snapshot to read what it holds."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from bot_bottle.contracts.freezer import FrozenImage, SnapshotRefused
from bot_bottle.contracts.provider import GUEST_CA_PATH
from bot_bottle.errors import BotBottleError
from bot_bottle_smolmachines.backend import SmolmachinesBackend
from bot_bottle_smolmachines.freezer import GUEST_LIST, GUEST_TAR, MARKER, SmolmachinesFreezer
from bot_bottle_smolmachines.smolvm import SmolvmError

pytestmark = pytest.mark.docker

SECRET = "sk-test-SECRET-4711-do-not-freeze"
REPO = "bot-bottle-test/smol-snapshot"
TOKEN = "route-token-0b5e-held-by-the-bundle"


def scan(path: str, chunks: Iterable[bytes]) -> list[str]:
    return ["the test secret"] if SECRET.encode() in b"".join(chunks) else []


@pytest.fixture
def snapshots(docker_client: Any) -> Iterator[list[str]]:
    """Refs of the images a test created; removed after it."""
    made: list[str] = []
    yield made
    import docker.errors

    for ref in made:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref, force=True)


def _read(docker_client: Any, image: str, *paths: str) -> list[str]:
    """Each path's content in ``image`` ('-' for a missing one), read from a
    created (never started) container: the fake guest's root has no shell."""
    import io
    import tarfile

    import docker.errors

    box = docker_client.containers.create(image, command=["none"], network_mode="none")
    try:
        out = []
        for path in paths:
            try:
                stream, _ = box.get_archive(path)
            except docker.errors.NotFound:
                out.append("-")
                continue
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                fh = tar.extractfile(member) if member is not None else None
                out.append(fh.read().decode() if fh is not None else "-")
        return out
    finally:
        box.remove(force=True)


def _prepared(
    mini_plan: Any, base_image: str, *, secret_env: bool = False
) -> tuple[SmolmachinesBackend, Any]:
    from bot_bottle.egress.config import EgressConfig
    from bot_bottle.secrets import Secret

    plan_class = mini_plan
    if secret_env:

        class WithToken(mini_plan):  # type: ignore[misc, valid-type]
            def bundle_env(self) -> dict[str, Secret]:
                return {"EGRESS_TOKEN_0": Secret(TOKEN)}

        plan_class = WithToken
    backend = SmolmachinesBackend(kvm=lambda: None)
    plan = plan_class(agent_image=base_image, egress_config=EgressConfig())
    return backend, backend.prepare(plan)


def test_commit_scans_changes_keeps_the_bottle_running_and_imports(
    mini_plan: Any, fake_smolvm: Any, docker_client: Any, base_image: str, snapshots: list[str]
) -> None:
    backend, prepared = _prepared(mini_plan, base_image, secret_env=True)
    freezer = SmolmachinesFreezer()
    slug, machine = prepared.plan.slug, prepared.machine
    fs = fake_smolvm.state / "fs" / machine
    # Image content (older than the launch marker): frozen, never scanned.
    (fs / "usr/share/base").mkdir(parents=True)
    (fs / "usr/share/base/vendored.txt").write_text(f"a vendored example {SECRET}\n")
    with backend.launch(prepared):
        assert (fs / MARKER.lstrip("/")).is_file()
        # What the bottle did after the marker.
        (fs / "home/agent").mkdir(parents=True)
        (fs / "home/agent/notes.txt").write_text("clean work\n")
        (fs / "tmp").mkdir()
        (fs / "tmp/scratch").write_text("scratch\n")
        n = len(fake_smolvm.calls())
        image = freezer.commit(slug, ref=f"{REPO}:clean", scan=scan, ca_cert_path=GUEST_CA_PATH)
        snapshots.append(image.ref)
        guest = [c[c.index("--") + 1 :] for c in fake_smolvm.calls()[n:] if "--" in c]
        verbs = [" ".join(c[:2]) for c in fake_smolvm.calls()[n:]]
        # Still running: the agent's processes were stopped for the read only.
        assert fake_smolvm.machines()[machine]["state"] == "running"
        assert freezer.in_use(FrozenImage("smolmachines", base_image, "")) == [slug]
        # The scan's known secrets: what this bottle's Docker bundle holds.
        assert [s.reveal() for s in freezer.bottle_secrets(slug)] == [TOKEN]

        # A secret written after the marker: refused, nothing imported.
        (fs / "home/agent/leak.txt").write_text(f"token={SECRET}\n")
        with pytest.raises(SnapshotRefused) as refused:
            freezer.commit(slug, ref=f"{REPO}:leaky", scan=scan, ca_cert_path=GUEST_CA_PATH)
        assert set(refused.value.findings) == {"/home/agent/leak.txt"}
        assert docker_client.images.list(name=f"{REPO}:leaky") == []
        assert not (fs / GUEST_TAR.lstrip("/")).exists()

        # The guest read fails half-way: the agent runs again all the same.
        n = len(fake_smolvm.calls())
        fake_env = {"FAKE_SMOLVM_FAIL": "machine cp:1"}
        with pytest.MonkeyPatch.context() as mp:
            for k, v in fake_env.items():
                mp.setenv(k, v)
            with pytest.raises(SmolvmError, match="machine cp failed"):
                freezer.commit(slug, ref=f"{REPO}:failed", scan=scan, ca_cert_path=GUEST_CA_PATH)
        after = [c[c.index("--") + 1 :] for c in fake_smolvm.calls()[n:] if "--" in c]
        assert after[-2:] == [
            ["pkill", "-CONT", "-u", "agent"],
            ["rm", "-f", GUEST_TAR, GUEST_LIST],
        ]

    exec_, cp = "machine exec", "machine cp"
    assert verbs == ["machine ls", exec_, exec_, exec_, cp, cp, cp, exec_, exec_]
    assert guest[:3] == [["pkill", "-STOP", "-u", "agent"], ["pkill", "-STOP", "-u", "agent"],
                         guest[2]]  # fmt: skip
    assert guest[2][:2] == ["sh", "-c"] and guest[2][3:] == ["sh", MARKER, GUEST_TAR, GUEST_LIST]
    assert guest[3:] == [["pkill", "-CONT", "-u", "agent"], ["rm", "-f", GUEST_TAR, GUEST_LIST]]

    # The snapshot, read from a container of it: the bottle's work and the
    # image content are in; /tmp content and the bottle CA are not.
    out = _read(docker_client, image.ref, "/home/agent/notes.txt", "/usr/share/base/vendored.txt",
                "/tmp/scratch", GUEST_CA_PATH)  # fmt: skip
    assert out == ["clean work\n", f"a vendored example {SECRET}\n", "-", "-"]
    # The agent image's own config, never the VM's environment.
    base_cfg = docker_client.images.get(base_image).attrs["Config"]
    snap = docker_client.images.get(image.ref)
    assert snap.attrs["Config"]["Env"] == base_cfg["Env"]
    assert snap.labels["bot-bottle.frozen"] == "true"
    assert image.ref in freezer.frozen_refs() and freezer.exists(image)
    assert fake_smolvm.machines() == {}


def test_a_kept_vm_is_started_for_the_read_and_released_after(
    mini_plan: Any, fake_smolvm: Any, docker_client: Any, base_image: str, snapshots: list[str]
) -> None:
    backend, prepared = _prepared(mini_plan, base_image)
    freezer = SmolmachinesFreezer()
    slug, machine = prepared.plan.slug, prepared.machine
    with backend.launch(prepared) as bottle:
        bottle.keep_for_resume()  # the agent exited non-zero
    assert fake_smolvm.machines()[machine]["state"] == "stopped"
    n = len(fake_smolvm.calls())
    image = freezer.commit(slug, ref=f"{REPO}:kept", scan=scan, ca_cert_path=GUEST_CA_PATH)
    snapshots.append(image.ref)
    verbs = [" ".join(c[:2]) for c in fake_smolvm.calls()[n:]]
    assert verbs[:2] == ["machine ls", "machine start"] and verbs[-1] == "machine stop"
    assert fake_smolvm.machines()[machine]["state"] == "stopped"
    freezer.release(slug)
    assert fake_smolvm.machines() == {}
    with pytest.raises(BotBottleError, match="has no agent VM to commit"):
        freezer.commit(slug, ref=f"{REPO}:gone", scan=scan, ca_cert_path=GUEST_CA_PATH)


def test_the_freezer_is_registered(fake_smolvm: Any) -> None:
    """``bot-bottle commit`` finds it by the backend's name (entry point)."""
    from bot_bottle.plugins import PluginHost

    host = PluginHost(environ={}).load()
    assert isinstance(host.create("freezers", "smolmachines"), SmolmachinesFreezer)
