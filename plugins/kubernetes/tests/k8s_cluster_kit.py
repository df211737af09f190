"""What the cluster tests share: a plan, a kube context on the fake, and a
scripted "pod shell" answering the exec calls the backend makes.

The pod shell is the fake's stand-in for containers (see fake_apiserver.py):
it understands exactly the commands the backend sends — the fence probe's
``timeout 3 bash -c 'exec 3<>/dev/tcp/$0/$1' HOST PORT``, the copy-in
``sh -c 'mkdir -p "$1" && head -c "$0" | tar -x ...'``, ``tar -c`` for
copy-out (also bounded: ``sh -c 'tar -c ... | head -c "$0"'``),
``mv -f --``, chmod/chown — and acts on a per-pod directory on the host, so a
copied file can be read back. Anything else answers 127, so a test never
passes on a command the shell did not understand.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import K8S_VERSION, ExecSession, FakeApiServer, running_fake

#: The probe verdicts a fenced cluster gives: only the listed bundle port connects.
CONNECTED = (0, b"")
TIMED_OUT = (124, b"")
REFUSED = (
    1,
    b"bash: connect: Connection refused\nbash: line 1: /dev/tcp/x/1: Connection refused\n",
)


@dataclass
class PodShell:
    root: Path
    #: (host, port) -> (exit code, stderr) for the probes: what the pod's network does.
    network: Callable[[str, int], tuple[int, bytes]] = lambda _h, _p: TIMED_OUT
    #: Exit code for an argv whose first word is a key (e.g. a scripted agent).
    programs: dict[str, int] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    #: The environment each wrapped exec received through stdin.
    envs: list[dict[str, str]] = field(default_factory=list)
    #: Guest path -> the raw tar a copy-out of it answers with (a hostile pod).
    archives: dict[str, bytes] = field(default_factory=dict)

    def pod_dir(self, session: ExecSession) -> Path:
        d = self.root / session.pod
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _path(self, session: ExecSession, guest: str) -> Path:
        return self.pod_dir(session) / guest.lstrip("/")

    def __call__(self, session: ExecSession) -> int:
        argv = list(session.argv)
        self.calls.append(argv)
        env: dict[str, str] = {}
        if argv[:2] == ["sh", "-c"] and argv[3:4] == ["sh"]:
            # The launcher's env wrapper: NAME=base64 lines up to a blank one.
            import base64

            raw = b""
            while b"\n\n" not in raw and not raw.startswith(b"\n"):
                raw += session.read_stdin(timeout=5)
            for line in raw.split(b"\n\n", 1)[0].decode().splitlines():
                name, _, value = line.partition("=")
                env[name] = base64.b64decode(value).decode()
            self.envs.append(env)
            argv = argv[4:]
            if argv[:1] == ["runuser"]:
                argv = argv[argv.index("--") + 1 :]
            if argv[:2] == ["env", "-C"]:
                argv = argv[3:]
        if argv[:3] == ["timeout", "3", "bash"]:
            host, port = argv[-2], int(argv[-1])
            code, err = self.network(host, port)
            session.stderr(err)
            return code
        if argv[:2] == ["sh", "-c"] and "tar -x" in argv[2]:
            size, dest = int(argv[3]), argv[4]
            data = session.read_stdin()
            if len(data) < size:
                session.stderr(b"head: short read\n")
                return 2
            target = self._path(session, dest)
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(data[:size])) as tar:
                tar.extractall(target, filter="data")
            return 0
        limit: int | None = None
        if argv[:2] == ["sh", "-c"] and argv[2] == 'tar -c -f - -C "$1" "$2" | head -c "$0"':
            limit, argv = int(argv[3]), ["tar", "-c", "-f", "-", "-C", argv[4], argv[5]]
        if argv[:3] == ["tar", "-c", "-f"]:
            parent, base = argv[5], argv[6]
            planted = self.archives.get(f"{parent.rstrip('/')}/{base}")
            if planted is not None:
                session.stdout(planted[:limit])
                return 0
            if not (self._path(session, parent) / base).exists():
                session.stderr(f"tar: {parent}: Cannot open: No such file or directory\n".encode())
                return 2
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(self._path(session, parent) / base, arcname=base)
            session.stdout(buf.getvalue()[:limit])
            return 0
        if argv[:2] == ["sh", "-c"] and argv[3:4] == ["mark"]:
            # The freezer's launch marker (freezer.mark_argv).
            marker = self._path(session, argv[4])
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            return 0
        if argv[0] in ("chmod", "chown"):
            return 0
        if argv[:3] == ["mv", "-f", "--"] and len(argv) == 5:
            src, dest = self._path(session, argv[3]), self._path(session, argv[4])
            if not src.exists():
                session.stderr(f"mv: cannot stat '{argv[3]}'\n".encode())
                return 1
            src.replace(dest)
            return 0
        if argv[0] in self.programs:
            session.stdout(f"ran {' '.join(argv)}\n".encode())
            return self.programs[argv[0]]
        session.stderr(f"pod shell: {argv[0]}: command not found\n".encode())
        return 127


def fenced(server: FakeApiServer) -> Callable[[str, int], tuple[int, bytes]]:
    """A NetworkPolicy-enforcing cluster, read from the fake's store: from the
    agent pod only the bundle pod's ports its policy lists connect; every
    other packet is dropped (the probe times out)."""
    from bot_bottle_kubernetes.fence import bundle_ports

    def network(host: str, port: int) -> tuple[int, bytes]:
        pods = {o["metadata"]["labels"].get("bot-bottle/role"): o for o in server.all("Pod")}
        bundle, agent = pods.get("sidecars"), pods.get("agent")
        if bundle is None or agent is None:
            return TIMED_OUT
        ports = bundle_ports(server.all("NetworkPolicy"), agent["metadata"]["labels"])
        if host == bundle["status"].get("podIP") and port in ports:
            return CONNECTED
        return TIMED_OUT

    return network


def open_network(host: str, port: int) -> tuple[int, bytes]:
    """A CNI that ignores NetworkPolicy: everything answers."""
    return CONNECTED


def mini_plan(**over: Any) -> Any:
    """A plan with exactly the fields of the backend contract's protocol."""
    from bot_bottle.contracts.provider import ProviderPlan
    from bot_bottle.manifest.models import Resources
    from bot_bottle.secrets import Secret

    @dataclass(frozen=True)
    class MiniPlan:
        slug: str = "shell-0a1b2c"
        agent: str = "shell"
        label: str | None = "k8s test"
        cwd: Path | None = None
        bottle: str = "demo"
        provider_plan: ProviderPlan = field(default_factory=lambda: ProviderPlan(env={}))
        agent_image_spec: Any = None
        agent_image: str | None = "registry.test/agent@sha256:" + "a" * 64
        bundle_image: str | None = "registry.test/bundle@sha256:" + "b" * 64
        agent_env: Mapping[str, Secret] = field(
            default_factory=lambda: {"HTTPS_PROXY": Secret("http://127.0.0.1:18080")}
        )
        egress_config: Any = None
        gitgate: Any = None
        gitgate_secrets: Mapping[str, Secret] = field(default_factory=dict)
        supervise: bool = False
        #: Where the agent reaches its endpoints: its pod's loopback (the relay sidecar).
        agent_host: str = "127.0.0.1"
        extra_hosts: Mapping[str, str] = field(default_factory=dict)
        upstream_ca: Path | None = None
        resources: Resources = field(default_factory=Resources)
        backend_options: Mapping[str, Any] = field(default_factory=dict)

        def bundle_env(self) -> Mapping[str, Secret]:
            return {"API_KEY": Secret("sk-test-not-real")}

    return MiniPlan(**over)


# -- fixtures (imported by the test modules; a conftest here would be shared
# with the render tests, so these live in the kit) ----------------------------

NAMESPACE = "bot-bottle"


@pytest.fixture(params=[K8S_VERSION], ids=lambda v: f"k8s-{v}")
def fake(request: pytest.FixtureRequest) -> Iterator[FakeApiServer]:
    """The fake API server validating against Kubernetes ``K8S_VERSION``
    (the version is in every test id), with the bottles' namespace."""
    with running_fake(request.param) as server:
        server.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        yield server


@pytest.fixture
def kube_env(fake: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeApiServer:
    """KUBECONFIG at the fake, a private BOT_BOTTLE_HOME, the bottles' namespace."""
    monkeypatch.setenv("KUBECONFIG", str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.setenv("BOT_BOTTLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BOT_BOTTLE_K8S_NAMESPACE", NAMESPACE)
    for name in (
        "BOT_BOTTLE_K8S_CONTEXT",
        "BOT_BOTTLE_K8S_REGISTRY",
        "BOT_BOTTLE_K8S_FENCE_PUBLIC",
    ):
        monkeypatch.delenv(name, raising=False)
    return fake


@pytest.fixture
def shell(fake: FakeApiServer, tmp_path: Path) -> PodShell:
    """The pods' scripted shell on a fenced network."""
    pod_shell = PodShell(tmp_path / "pods", network=fenced(fake))
    fake.exec_handler = pod_shell
    return pod_shell


def kube_for(fake: FakeApiServer, tmp_path: Path) -> Any:
    from bot_bottle_kubernetes.cluster import KubeTarget, connect

    cfg = fake.write_kubeconfig(tmp_path / "kubeconfig-direct")
    return connect(KubeTarget(kubeconfig=str(cfg), namespace=NAMESPACE))


def bottle_objects(fake: FakeApiServer) -> list[tuple[str, str]]:
    """(kind, name) of everything in the namespace but its shared default deny."""
    return sorted(
        (o["kind"], o["metadata"]["name"])
        for o in fake.all(namespace=NAMESPACE)
        if o["metadata"]["name"] != "bot-bottle-default-deny"
    )
