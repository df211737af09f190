"""Commit and resume of cluster bottles (``freezer.py``), Kubernetes 1.33 (the fake's schemas).

The bottle is launched by ``KubernetesBackend.launch`` with the real
``kubernetes`` client against the fake API server. The fake has no
containers, so its ``pods/exec`` handler runs each exec into the agent
pod's ``agent`` container as ``docker exec`` in a **real container** of the
agent image, started with the agent container's security context (every
capability dropped but CHOWN, DAC_OVERRIDE, FOWNER, SETUID, SETGID;
no-new-privileges; no network): the launch marker, the CA copy, the
freezer's stop/continue and its ``find``/``tar`` run for real there. Only
the fence probe's connects and the bundle pod's execs stay scripted
(:class:`k8s_cluster_kit.PodShell`). Images go through Debian's
``docker-registry`` started on loopback, as in test_registry_push.py; the
snapshot is built by the local engine and pushed there, by digest.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fake_apiserver import ExecSession, FakeApiServer
from k8s_cluster_kit import NAMESPACE, PodShell, mini_plan
from test_registry_push import _served_digest, registry  # noqa: F401

from bot_bottle.contracts.freezer import SnapshotRefused
from bot_bottle.contracts.provider import GUEST_CA_PATH
from bot_bottle.errors import BotBottleError
from bot_bottle.plugins import PluginHost
from bot_bottle.secrets import Secret
from bot_bottle.snapshots import L_SNAPSHOT, image_tag, secret_scan
from bot_bottle_kubernetes import freezer as fz
from bot_bottle_kubernetes.backend import KubernetesBackend
from tests.conftest import base_image, docker_client  # noqa: F401

#: A GitHub-format token (not a live one), as the Docker escape test uses.
TOKEN = "ghp_" + "cLq0tI1jkszp88r7fYkDc96kVncLVP41QdEW"
SLUG = "shell-0a1b2c"
AGENT_UID = 1000
IDLE = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"


def _docker(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["docker", *args], input=input, capture_output=True, check=False, timeout=600
    )


@dataclasses.dataclass
class DockerAgent:
    """The fake's exec handler: the agent container's execs in a real container."""

    container: str
    shell: PodShell
    #: Called with each argv before it runs (to look at the container mid-commit).
    before: list[Any] = dataclasses.field(default_factory=list)
    #: argv[2] (a script) -> the raw stdout answered instead (a hostile pod).
    planted: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def __call__(self, session: ExecSession) -> int:
        argv = list(session.argv)
        if session.container != "agent" or argv[:2] == ["timeout", "3"]:
            return self.shell(session)  # the bundle pod, the fence probe's network
        for hook in self.before:
            hook(argv)
        if len(argv) > 2 and argv[2] in self.planted:
            session.stdout(self.planted[argv[2]])
            return 0
        stdin = session.read_stdin(timeout=2)
        done = _docker("exec", "-i", self.container, *argv, input=stdin)
        session.stdout(done.stdout)
        session.stderr(done.stderr)
        return done.returncode


@pytest.fixture
def agent_box(
    base_image: str,  # noqa: F811
    docker_client: Any,  # noqa: F811
) -> Iterator[str]:
    """A container of the agent image with the agent container's security context."""
    name = f"bbk8sf-{uuid.uuid4().hex[:8]}"
    caps = [a for c in ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID")
            for a in ("--cap-add", c)]  # fmt: skip
    started = _docker(
        "run", "-d", "--name", name, "--network", "none", "--cap-drop", "ALL", *caps,
        "--security-opt", "no-new-privileges", "--label", "bot-bottle-test=k8s-freezer",
        base_image, "sh", "-c", IDLE,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        # The agent's home, as the image's build would have made it.
        home = _docker("exec", name, "sh", "-c", f"mkdir -p /home/agent && "
                       f"chown {AGENT_UID}:{AGENT_UID} /home/agent")  # fmt: skip
        assert home.returncode == 0, home.stderr
        yield name
    finally:
        _docker("rm", "-f", name)


def _as_agent(box: str, script: str) -> None:
    done = _docker("exec", "-u", f"{AGENT_UID}:{AGENT_UID}", box, "sh", "-c", script)
    assert done.returncode == 0, done.stderr


def _as_root(box: str, script: str) -> bytes:
    done = _docker("exec", box, "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _commit(name: str, known: list[Secret] | None = None) -> Any:
    return fz.KubernetesFreezer().commit(
        SLUG,
        ref=image_tag(name),
        scan=secret_scan(PluginHost().load(), known or []),
        ca_cert_path=GUEST_CA_PATH,
        labels={L_SNAPSHOT: name},
    )


def _launch(**plan: Any) -> Any:
    backend = KubernetesBackend(progress=lambda _m: None)
    return backend.launch(backend.prepare(mini_plan(**plan)))


def _local_image(ref: str) -> bool:
    return _docker("image", "inspect", ref).returncode == 0


@pytest.mark.docker
def test_commit_freezes_the_changes_as_a_layer_pushed_by_digest_and_resume_runs_it(
    kube_env: FakeApiServer,
    shell: PodShell,
    agent_box: str,
    registry: str,  # noqa: F811
    base_image: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot_bottle_kubernetes.images import push_images

    monkeypatch.setenv("BOT_BOTTLE_K8S_REGISTRY", registry)
    pushed = push_images({"agent": base_image}, registry)["agent"]
    handler = DockerAgent(agent_box, shell)
    kube_env.exec_handler = handler
    states: list[str] = []

    def agent_state(argv: list[str]) -> None:
        # While the freezer reads, the agent's process must be stopped.
        if len(argv) > 2 and argv[2] == fz.COLLECT_SCRIPT:
            states.append(_as_root(agent_box, f"cat /proc/{pid}/stat").decode().split()[2])

    frozen = None
    try:
        # Already in the registry by digest: launch must not push it again.
        with _launch(agent_image=pushed, bundle_image=pushed):
            agent = kube_env.get("Pod", NAMESPACE, f"bb-{SLUG}-agent")
            assert agent is not None and agent["spec"]["containers"][0]["image"] == pushed
            # The launch marked the container (root's, before provisioning) and
            # copied the CA in; a provider appends the CA to the system bundle.
            _as_root(agent_box, f"test -f {fz.MARKER} && test -f {GUEST_CA_PATH} && "
                     f"cat {GUEST_CA_PATH} >> /etc/ssl/certs/ca-certificates.crt")  # fmt: skip
            ca_pem = _as_root(agent_box, f"cat {GUEST_CA_PATH}")
            # The agent works: a file, a directory, a symlink, scratch space.
            _as_agent(
                agent_box,
                "cd /home/agent && echo 'my notes' > notes.txt && "
                "mkdir -p proj/src && echo 'print(1)' > proj/src/main.py && "
                "chmod 750 proj && ln -s proj/src/main.py main && echo x > /tmp/scratch",
            )
            # It deletes a file and a directory tree of the image (as root:
            # the image's files are root's; who deleted does not matter).
            _as_root(agent_box, "rm /etc/issue && rm -r /usr/share/doc")
            # Its process makes itself non-dumpable (prctl PR_SET_DUMPABLE 0;
            # x86_64 syscall 157). Kernels that then give /proc/PID to root
            # would hide its uid from a stat of the directory; the freezer
            # reads the real uid from /proc/PID/status (this 6.18 kernel
            # keeps the uid on the directory, so here both ways find it).
            nodump = (
                "syscall(157, 4, 0, 0, 0, 0) == 0 or die; "
                "open(my $f, '>', '/tmp/dumpable') or die; "
                "print $f syscall(157, 3, 0, 0, 0, 0); close $f; sleep 600"
            )
            started = _docker("exec", "-d", "-u", str(AGENT_UID), agent_box, "perl", "-e", nodump)
            assert started.returncode == 0
            for _ in range(100):
                if _as_root(agent_box, "cat /tmp/dumpable 2>/dev/null; true").strip():
                    break
                time.sleep(0.05)
            assert _as_root(agent_box, "cat /tmp/dumpable").strip() == b"0"
            find_pid = (
                "for p in /proc/[0-9]*; do "
                f"grep -q '^Uid:[[:space:]]*{AGENT_UID}[[:space:]]' $p/status "
                "2>/dev/null && echo ${p#/proc/}; done; true"
            )
            pid = _as_root(agent_box, find_pid).decode().split()[0]
            handler.before.append(agent_state)
            frozen = _commit("snap-1")
            # Stopped while read, running again after.
            assert states == ["T"]
            state = _as_root(agent_box, f"cat /proc/{pid}/stat").decode().split()[2]
            assert state in ("S", "R")
        repo = "bot-bottle/snapshot"
        tag = image_tag("snap-1").split(":", 1)[1]
        assert frozen.backend == "kubernetes"
        assert frozen.ref == f"{registry}/{repo}@{_served_digest(registry, repo, tag)}"
        assert fz.KubernetesFreezer().exists(frozen)
        # What the snapshot holds: the agent's changes with their owners and
        # modes; no scratch, no bottle CA (the file, and its copy in the bundle).
        check = (
            "cat /home/agent/notes.txt; stat -c '%u %a' /home/agent/notes.txt /home/agent/proj; "
            "readlink /home/agent/main; cat /home/agent/proj/src/main.py; "
            f"test ! -e /tmp/scratch && test ! -e {GUEST_CA_PATH} && echo clean; "
            "sha256sum /etc/ssl/certs/ca-certificates.crt; "
            # Deleted stays deleted; their neighbours stay; no whiteout is a file.
            "test ! -e /etc/issue && test ! -e /usr/share/doc && test ! -e /etc/.wh.issue && "
            "test -f /etc/issue.net && test -d /usr/share/common-licenses && echo deleted"
        )
        got = _docker("run", "--rm", "--network", "none", frozen.ref, "sh", "-c", check)
        assert got.returncode == 0, got.stderr
        lines = got.stdout.decode().splitlines()
        assert lines[:6] == [
            "my notes", f"{AGENT_UID} 644", f"{AGENT_UID} 750", "proj/src/main.py",
            "print(1)", "clean",
        ]  # fmt: skip
        original = _docker("run", "--rm", base_image, "sha256sum",
                           "/etc/ssl/certs/ca-certificates.crt").stdout.decode()  # fmt: skip
        assert lines[6] == original.strip()
        assert lines[7:] == ["deleted"]
        # The deletions are one layer of whiteouts on top of the changes' layer.
        layers = _docker("image", "inspect", "--format", "{{len .RootFS.Layers}}", frozen.ref)
        base_layers = _docker("image", "inspect", "--format", "{{len .RootFS.Layers}}", base_image)
        assert int(layers.stdout) == int(base_layers.stdout) + 2
        assert ca_pem.strip() and ca_pem not in got.stdout
        # The image's own config, never the pod's environment.
        env = _docker("image", "inspect", "--format", "{{json .Config.Env}}", frozen.ref)
        assert b"HTTPS_PROXY" not in env.stdout
        # Resume: the snapshot's reference, as it is, in the agent pod.
        shell_only = PodShell(shell.root, network=shell.network)
        kube_env.exec_handler = shell_only
        with _launch(agent_image=frozen.ref, bundle_image=pushed):
            agent = kube_env.get("Pod", NAMESPACE, f"bb-{SLUG}-agent")
            assert agent is not None
            assert agent["spec"]["containers"][0]["image"] == frozen.ref
            assert fz.KubernetesFreezer().in_use(frozen) == [SLUG]
    finally:
        if frozen is not None:
            fz.KubernetesFreezer().remove(frozen)
            _docker("image", "rm", frozen.ref)
        _docker("image", "rm", pushed)
    assert not _local_image(image_tag("snap-1"))


@pytest.mark.docker
def test_a_planted_token_refuses_the_commit_and_nothing_is_built(
    kube_env: FakeApiServer,
    shell: PodShell,
    agent_box: str,
    base_image: str,  # noqa: F811
) -> None:
    kube_env.exec_handler = DockerAgent(agent_box, shell)
    with _launch(agent_image=base_image, bundle_image=base_image):
        _as_agent(
            agent_box,
            f"cd /home/agent && echo 'token = {TOKEN}' > .env && "
            "echo 'nothing here' > ok.txt && echo 'api: bottle-known-9f2c1a77' > cfg",
        )
        # A token parked in a symlink's target is text in the layer too.
        _as_agent(agent_box, f"ln -s '/x/{TOKEN}' /home/agent/parked")
        with pytest.raises(SnapshotRefused) as err:
            _commit("refused-1", known=[Secret("bottle-known-9f2c1a77")])
        assert set(err.value.findings) == {
            "/home/agent/.env", "/home/agent/cfg", "/home/agent/parked",
        }  # fmt: skip
        assert "refusing to commit" in err.value.message and err.value.hint
        assert TOKEN not in str(err.value.findings)
        # The agent runs again after a refusal too.
        stat = _as_root(
            agent_box,
            "for p in /proc/[0-9]*; do "
            f'[ "$(stat -c %u $p)" = {AGENT_UID} ] && cat $p/stat; done; true',
        )
        assert b") T " not in stat
    assert not _local_image(image_tag("refused-1"))


@pytest.mark.docker
def test_the_bundles_secret_values_are_known_to_the_scan(
    kube_env: FakeApiServer,
    shell: PodShell,
    agent_box: str,
    base_image: str,  # noqa: F811
) -> None:
    """The bottle's own secret values come from the bundle's Secret (the
    agent pod holds none), so an agent copying one into a file is caught."""
    kube_env.exec_handler = DockerAgent(agent_box, shell)
    plan = mini_plan(agent_image=base_image, bundle_image=base_image)
    # An injected credential's slot, as make_plan numbers them.
    token = {"EGRESS_TOKEN_0": Secret("route-token-value-7f3a9c0d11")}
    object.__setattr__(plan, "bundle_env", lambda: token)
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(plan)):
        known = fz.KubernetesFreezer().bottle_secrets(SLUG)
        assert [s.reveal() for s in known] == ["route-token-value-7f3a9c0d11"]
        _as_agent(agent_box, "echo 'route-token-value-7f3a9c0d11' > /home/agent/copied")
        with pytest.raises(SnapshotRefused) as err:
            _commit("refused-2", known=known)
        assert list(err.value.findings) == ["/home/agent/copied"]


def _tar(*members: tuple[str, str, str]) -> bytes:
    """(name, type, link or content) -> a tar as a hostile pod would answer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = extra.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "lnk": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                         "chr": tarfile.CHRTYPE}[kind]  # fmt: skip
            info.linkname = extra
            tar.addfile(info)
    return buf.getvalue()


def _pax(name: str, headers: dict[str, str], *, uname: str = "") -> bytes:
    """One empty file whose PAX header carries ``headers`` (GNU tar without
    --xattrs never writes one; a hostile pod may)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.pax_headers, info.uname = headers, uname
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


HOSTILE = {
    "xattr-in-pax": _pax("./home/agent/f", {"SCHILY.xattr.user.note": TOKEN}),
    "capability-xattr": _pax("./home/agent/f", {"SCHILY.xattr.security.capability": "x"}),
    "pax-comment": _pax("./home/agent/f", {"comment": TOKEN}),
    # Not in the changed files' list under this name: copied unscanned.
    "dot-inside": _tar(("./home/agent/./f", "file", TOKEN)),
    "double-slash": _tar(("./home//agent/f", "file", TOKEN)),
    "dotdot": _tar(("./home/agent/../../../etc/x", "file", "x")),
    "absolute": _tar(("/etc/cron.d/x", "file", "x")),
    "symlink-climbing-out": _tar(("./home/agent/out", "sym", "../../../../../host")),
    "through-a-symlink": _tar(
        ("./home/agent/l", "sym", "/etc"), ("./home/agent/l/passwd", "file", "x")
    ),
    "hard-link": _tar(("./home/agent/f", "file", "x"), ("./home/agent/h", "lnk", "etc/shadow")),
    "fifo": _tar(("./home/agent/p", "fifo", "")),
    "whiteout-name": _tar(("./etc/.wh.passwd", "file", "")),
    "device": _tar(("./home/agent/d", "chr", "")),
    "not-a-tar": b"\x00garbage" * 200,
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_archive_from_the_pod_is_refused_whole(kind: str) -> None:
    with pytest.raises(fz.UnsafeCommitError) as err:
        fz.check_archive(HOSTILE[kind])
    assert "refusing to commit" in err.value.message


def test_a_rootfs_archive_with_inside_links_passes() -> None:
    ok = _tar(
        ("./home/agent", "dir", ""),
        ("./home/agent/a.txt", "file", "a"),
        ("./home/agent/rel", "sym", "a.txt"),
        ("./usr/local/bin/tool", "sym", "/usr/local/lib/tool/bin"),  # absolute: inside the image
    )
    assert fz.check_archive(ok) == {"/home/agent/a.txt"}


@pytest.mark.docker
def test_a_hostile_pod_or_one_over_the_cap_builds_nothing_and_the_agent_continues(
    kube_env: FakeApiServer,
    shell: PodShell,
    agent_box: str,
    base_image: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = DockerAgent(agent_box, shell)
    kube_env.exec_handler = handler
    with _launch(agent_image=base_image, bundle_image=base_image):
        handler.planted[fz.COLLECT_SCRIPT] = HOSTILE["through-a-symlink"]
        with pytest.raises(fz.UnsafeCommitError, match="under a symlink"):
            _commit("hostile-1")
        del handler.planted[fz.COLLECT_SCRIPT]
        # A file list naming a path out of the root: refused, nothing built.
        handler.planted[fz.LIST_SCRIPT] = HOSTILE_LISTS["dotdot"]
        with pytest.raises(fz.UnsafeCommitError, match="escapes the image's root"):
            _commit("hostile-3")
        del handler.planted[fz.LIST_SCRIPT]
        # Real: 2 MiB of changes against a 1 MiB cap, bounded in the pod.
        _as_agent(agent_box, "head -c 2097152 /dev/urandom > /home/agent/big")
        monkeypatch.setenv(fz.MAX_ENV, "1")
        with pytest.raises(fz.UnsafeCommitError, match="exceed 1 MiB") as err:
            _commit("hostile-2")
        assert fz.MAX_ENV in (err.value.hint or "")
        calls = [c for c in shell.calls if c[:1] == ["bash"]]
        assert calls == []  # every freezer exec went to the real container
        stat = _as_root(agent_box, "cat /proc/[0-9]*/stat 2>/dev/null; true")
        assert b") T " not in stat
    for name in ("hostile-1", "hostile-2", "hostile-3"):
        assert not _local_image(image_tag(name))


def _listing(*entries: str, root: str = "2049", end: bool = True) -> bytes:
    tail = (fz.LIST_END.decode(),) if end else ()
    return b"".join(e.encode() + b"\0" for e in (root, *entries, *tail))


def test_deletions_are_the_topmost_paths_of_the_image_gone_from_the_root_filesystem() -> None:
    listing = fz.parse_listing(_listing(
        "2049 d ./etc", "2049 f ./etc/issue.net", "2049 d ./usr", "2049 d ./usr/share",
        "2049 d ./home", "77 d ./workspace", "2049 f ./home/new",
    ))  # fmt: skip
    image = {"etc", "etc/issue", "etc/issue.net", "usr", "usr/share", "usr/share/doc",
             "usr/share/doc/a", "usr/share/doc/a/b", "home", "workspace", "workspace/readme",
             "opt", "opt/x"}  # fmt: skip
    # A tree once, from its top; a mount point's content is not the agent's.
    assert fz.deletions(image, listing) == ["etc/issue", "opt", "usr/share/doc"]


def test_a_token_in_an_owner_name_is_found_with_the_names() -> None:
    data = _pax("./home/agent/f", {}, uname=TOKEN)
    fz.check_archive(data)
    found = fz.scan_names(data, secret_scan(PluginHost().load(), []))
    assert list(found) == ["/home/agent/f"]


def test_a_deletion_under_a_symlink_of_the_changes_is_refused() -> None:
    # The archive made home/agent/cfg a symlink to /etc, the listing says a
    # directory with "passwd" gone: the whiteout would delete /etc/passwd.
    data = _tar(("./home/agent/cfg", "sym", "/etc"))
    fz.check_archive(data)
    listing = fz.parse_listing(_listing(
        "2049 d ./home", "2049 d ./home/agent", "2049 d ./home/agent/cfg",
    ))  # fmt: skip
    image = {"home", "home/agent", "home/agent/cfg", "home/agent/cfg/passwd"}
    assert fz.deletions(image, listing) == ["home/agent/cfg/passwd"]  # without the archive's kinds
    with pytest.raises(fz.UnsafeCommitError, match="not a directory"):
        fz.deletions(image, listing, fz.archive_kinds(data))
    # A consistent pod: the symlink listed as one, nothing deleted under it.
    same = fz.parse_listing(_listing("2049 d ./home", "2049 d ./home/agent",
                                     "2049 l ./home/agent/cfg"))  # fmt: skip
    assert fz.deletions(image, same, fz.archive_kinds(data)) == []


def test_a_deletion_of_a_path_the_changes_hold_is_refused() -> None:
    # /etc/agent.conf was the agent's to write, not to delete (root's /etc):
    # in the archive, yet listed as gone, its whiteout would delete it.
    data = _tar(("./etc/agent.conf", "file", "x"))
    listing = fz.parse_listing(_listing("2049 d ./etc"))
    image = {"etc", "etc/agent.conf"}
    with pytest.raises(fz.UnsafeCommitError, match="lists it as deleted"):
        fz.deletions(image, listing, fz.archive_kinds(data))
    # A changed directory whose child went is an ordinary deletion.
    data = _tar(("./etc", "dir", ""))
    assert fz.deletions(image, listing, fz.archive_kinds(data)) == ["etc/agent.conf"]


HOSTILE_LISTS = {
    "dotdot": _listing("2049 f ./home/agent/../../../etc/shadow"),
    "absolute": _listing("2049 f /etc/shadow"),
    "no-type": _listing("2049 ./etc"),
    "no-root-device": b"2049 d ./etc\0",
    # find killed after ./usr: all of the image's /usr would read as deleted.
    "cut-short": _listing("2049 d ./etc", "2049 d ./usr", end=False),
    "empty": b"",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_LISTS))
def test_a_hostile_file_list_from_the_pod_is_refused(kind: str) -> None:
    with pytest.raises(fz.UnsafeCommitError) as err:
        fz.parse_listing(HOSTILE_LISTS[kind])
    assert "refusing to commit" in err.value.message


@pytest.mark.parametrize("bad", ["etc/../../x", "/etc/passwd", "../x", "etc/.wh.issue"])
def test_a_deleted_path_with_dotdot_or_a_whiteout_name_is_refused(bad: str, tmp_path: Any) -> None:
    with pytest.raises(fz.UnsafeCommitError):
        fz.whiteout_layer(["etc/issue", bad], tmp_path / "w.tar")


def test_the_whiteout_layer_names_each_deleted_path() -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "w.tar"
        fz.whiteout_layer(["etc/issue", "usr/share/doc", "top"], out)
        with tarfile.open(out) as tar:
            assert [(m.name, m.isfile(), m.size) for m in tar.getmembers()] == [
                ("etc/.wh.issue", True, 0), ("usr/share/.wh.doc", True, 0), (".wh.top", True, 0),
            ]  # fmt: skip


def test_a_gone_agent_pod_is_a_clear_error(kube_env: FakeApiServer) -> None:
    with pytest.raises(BotBottleError) as err:
        _commit("gone-1")
    assert "no agent pod" in err.value.message and "while it runs" in (err.value.hint or "")


def test_a_bad_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fz.MAX_ENV, "lots")
    with pytest.raises(BotBottleError, match=fz.MAX_ENV):
        fz.max_bytes()


def test_the_freezer_is_registered_under_the_backends_name() -> None:
    host = PluginHost().load()
    assert "kubernetes" in {c.name for c in host.components("freezers")}
    assert isinstance(host.create("freezers", "kubernetes"), fz.KubernetesFreezer)


@pytest.mark.docker
def test_core_commit_records_a_cluster_snapshot_and_snapshots_rm_removes_its_image(
    kube_env: FakeApiServer,
    shell: PodShell,
    agent_box: str,
    base_image: str,  # noqa: F811
) -> None:
    """Through core's ``commit_bottle`` (what ``bot-bottle commit`` runs): the
    state dir names the backend, the freezer hook finds this freezer. No
    registry: the snapshot is the local tag, for nodes given images by hand."""
    from bot_bottle import snapshots
    from bot_bottle.state import StateDir

    kube_env.exec_handler = DockerAgent(agent_box, shell)
    bottle = {"name": "demo", "chain": ["demo"], "agent_provider": {"template": "shell"}}
    with _launch(agent_image=base_image, bundle_image=base_image):
        StateDir.for_slug(SLUG).create(
            {"slug": SLUG, "agent": "shell", "backend": "kubernetes", "provider": "shell",
             "bottle_manifest": bottle}
        )  # fmt: skip
        _as_agent(agent_box, "echo kept > /home/agent/state.txt")
        said: list[str] = []
        record = snapshots.commit_bottle(SLUG, "via-core", host=PluginHost().load(),
                                         progress=said.append)  # fmt: skip
    try:
        assert (record.backend, record.image, record.source_slug) == (
            "kubernetes", image_tag("via-core"), SLUG,
        )  # fmt: skip
        assert snapshots.load_record("via-core").image == record.image
        got = _docker("run", "--rm", "--network", "none", record.image,
                      "cat", "/home/agent/state.txt")  # fmt: skip
        assert got.stdout == b"kept\n"
        # Nothing deleted, no whiteout layer: the pod's mounts and Docker's
        # init paths are no deletion.
        layers = [
            int(_docker("image", "inspect", "--format", "{{len .RootFS.Layers}}", i).stdout)
            for i in (record.image, base_image)
        ]
        assert layers[0] == layers[1] + 1
        labels = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", record.image)
        assert b'"bot-bottle.snapshot":"via-core"' in labels.stdout
        freezer = fz.KubernetesFreezer()
        assert freezer.exists(record.frozen())
        # Resume with an approved capability block: built FROM the snapshot.
        cap = snapshots.Capability(proposal=1, dockerfile="RUN touch /opt/cap-ok",
                                   approved_at="2026-12-04T00:00:00Z")  # fmt: skip
        derived = snapshots.resume_image(
            record.model_copy(update={"capabilities": [cap]}),
            host=PluginHost().load(), extra_ca=None, progress=lambda _l: None,
        )  # fmt: skip
        got = _docker("run", "--rm", "--network", "none", derived, "sh", "-c",
                      "cat /home/agent/state.txt && test -e /opt/cap-ok && id -u")  # fmt: skip
        assert got.stdout == b"kept\n0\n", got.stderr
    finally:
        fz.KubernetesFreezer().remove(record.frozen())
    assert not fz.KubernetesFreezer().exists(record.frozen())
    # The derived image went with it.
    assert not _local_image(derived)


@pytest.mark.docker
def test_an_agent_that_exited_non_zero_keeps_its_changes_for_resume_slug(
    kube_env: FakeApiServer,
    shell: PodShell,
    agent_box: str,
    base_image: str,  # noqa: F811
) -> None:
    """Core marks the bottle kept (non-zero exit); the pods go at teardown,
    so the teardown keeps the agent's changes in the preserved state dir,
    privately; ``resume SLUG`` commits from them (core's ``commit_bottle``
    with the pods gone), and ``release`` removes them."""
    from k8s_cluster_kit import bottle_objects

    from bot_bottle import snapshots
    from bot_bottle.state import StateDir

    kube_env.exec_handler = DockerAgent(agent_box, shell)
    state = StateDir.for_slug(SLUG)
    bottle_doc = {"name": "demo", "chain": ["demo"], "agent_provider": {"template": "shell"}}
    state.create({"slug": SLUG, "agent": "shell", "backend": "kubernetes",
                  "bottle_manifest": bottle_doc})  # fmt: skip
    said: list[str] = []
    backend = KubernetesBackend(progress=said.append)
    plan = mini_plan(agent_image=base_image, bundle_image=base_image)
    with backend.launch(backend.prepare(plan)) as bottle:
        _as_agent(agent_box, f"echo 'half done' > /home/agent/wip.txt && echo '{TOKEN}' > /tmp/t")
        _as_root(agent_box, "rm /etc/issue")
        bottle.keep_for_resume()
    state.preserve("agent exited with 3")
    assert bottle_objects(kube_env) == []
    kept = state.path / fz.KEPT
    assert any("kept for 'bot-bottle resume" in line for line in said), said
    assert kept.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in kept.iterdir()} == {
        fz.KEPT_TAR: 0o600, fz.KEPT_CA: 0o600, fz.KEPT_IMAGE: 0o600, fz.KEPT_LIST: 0o600,
    }  # fmt: skip
    record = snapshots.commit_bottle(SLUG, SLUG, host=PluginHost().load())
    try:
        got = _docker("run", "--rm", "--network", "none", record.image, "sh", "-c",
                      "cat /home/agent/wip.txt; test ! -e /tmp/t && echo no-scratch; "
                      "test ! -e /etc/issue && test -f /etc/issue.net && echo deleted")  # fmt: skip
        assert got.stdout == b"half done\nno-scratch\ndeleted\n", got.stderr
        fz.KubernetesFreezer().release(SLUG)
        assert not kept.exists()
    finally:
        fz.KubernetesFreezer().remove(record.frozen())


def test_a_kept_bottle_whose_pod_was_deleted_keeps_nothing_and_tears_down(
    kube_env: FakeApiServer, shell: PodShell, tmp_path: Any
) -> None:
    from k8s_cluster_kit import bottle_objects, kube_for

    from bot_bottle.state import StateDir

    state = StateDir.for_slug(SLUG)
    state.create({"slug": SLUG, "agent": "shell", "backend": "kubernetes"})
    said: list[str] = []
    backend = KubernetesBackend(progress=said.append)
    with backend.launch(backend.prepare(mini_plan())) as bottle:
        kube_for(kube_env, tmp_path).delete("Pod", f"bb-{SLUG}-agent")
        bottle.keep_for_resume()
    assert bottle_objects(kube_env) == []
    assert not (state.path / fz.KEPT).exists()
    assert any("could not be kept for resume" in line for line in said), said
