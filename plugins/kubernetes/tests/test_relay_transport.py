"""The two-pod transport for real, with Docker standing in for the pod
network: the agent-side relay (the agent pod's native sidecar) and the
bundle's relay daemon in network mode, from the real bundle image, in two
containers on an internal network this test creates. What the agent reaches
at 127.0.0.1 arrives at the daemon on the bundle's loopback; the daemons'
own ports stay closed to the other container."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bot_bottle_sidecars.layout import DAEMON_USERS, SOCK_DIR, agent_relay_argv, bundle_relay_argv

from bot_bottle.plan import LOOPBACK, PROXY_PORT
from tests.conftest import base_image, docker_client, unique  # noqa: F401

pytestmark = pytest.mark.docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PY = "/opt/bot-bottle/bin/python"
#: A line-echo server standing in for egress on the bundle's loopback.
ECHO = (
    "import socketserver\n"
    "class H(socketserver.StreamRequestHandler):\n"
    "    def handle(self):\n"
    "        self.wfile.write(b'echo:' + self.rfile.readline())\n"
    f"socketserver.TCPServer(('{LOOPBACK}', {PROXY_PORT}), H).serve_forever()\n"
)
CLIENT = (
    "import socket,sys\n"
    "s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
    "s.sendall(b'ping\\n'); print(s.recv(100).decode().strip())\n"
)


@pytest.fixture(scope="module")
def bundle_image(docker_client: Any, base_image: str) -> str:  # noqa: F811
    from bot_bottle_docker.images import ensure_bundle_image

    extra = HOST_CA if HOST_CA.exists() else None
    return ensure_bundle_image(base_image=base_image, extra_ca=extra).tag


@contextlib.contextmanager
def _network(client: Any, name: str) -> Iterator[Any]:
    # Internal: nothing on it reaches beyond the two containers.
    net = client.networks.create(name, driver="bridge", internal=True)
    try:
        yield net
    finally:
        net.remove()


def _relay_container(
    client: Any, image: str, name: str, net: str, command: list[str], env: dict[str, str]
) -> Any:
    uid = DAEMON_USERS["relay"].uid
    return client.containers.run(
        image,
        environment=env,
        entrypoint=command,
        command=[],
        name=name,
        network=net,
        user=f"{uid}:{uid}",
        tmpfs={SOCK_DIR: f"uid={uid},gid={uid},mode=0700"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        labels={"bot-bottle.test": "k8s-relay-transport"},
        detach=True,
    )


def _exec(container: Any, *argv: str) -> tuple[int, str]:
    code, out = container.exec_run(list(argv))
    return code, out.decode(errors="replace").strip()


def test_agent_loopback_reaches_the_bundle_daemon_over_the_network(
    docker_client: Any,  # noqa: F811
    bundle_image: str,
    unique: str,  # noqa: F811
    make_kube_plan: Any,
) -> None:
    import time

    plan = make_kube_plan("minimal")
    name = f"bb-k8s-transport-{unique}"
    # The containers go before their network (the stack unwinds first).
    with _network(docker_client, name) as net, contextlib.ExitStack() as stack:
        relay = " ".join(f"'{a}'" for a in bundle_relay_argv(plan, network=True))
        bundle = _relay_container(
            docker_client,
            bundle_image,
            f"{name}-bundle",
            net.name,
            ["sh", "-c", f'{PY} -c "$ECHO" & exec {relay}'],
            {"ECHO": ECHO},
        )
        stack.callback(bundle.remove, force=True)
        bundle.reload()
        bundle_ip = bundle.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        agent = _relay_container(
            docker_client,
            bundle_image,
            f"{name}-agent",
            net.name,
            agent_relay_argv(plan, bundle_host=bundle_ip),
            {},
        )
        stack.callback(agent.remove, force=True)
        deadline = time.monotonic() + 60
        code, out = 1, ""
        while time.monotonic() < deadline:
            code, out = _exec(agent, PY, "-c", CLIENT, LOOPBACK, str(PROXY_PORT))
            if code == 0 and out == "echo:ping":
                break
            time.sleep(0.5)
        assert (code, out) == (0, "echo:ping"), (bundle.logs()[-2000:], agent.logs()[-2000:])
        # The daemon's own port is the bundle's loopback only: the agent side
        # cannot reach it past the relay, nor the bundle's other addresses.
        code, out = _exec(agent, PY, "-c", CLIENT, bundle_ip, str(PROXY_PORT))
        assert code != 0 and "refused" in out.lower(), out
        # The agent relay listens on the agent's loopback only.
        code, out = _exec(bundle, PY, "-c", CLIENT, _ip(agent, net.name), str(PROXY_PORT))
        assert code != 0, out


def _ip(container: Any, net: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][net]["IPAddress"]


def test_the_dirs_init_container_gives_each_shared_dir_to_its_one_user(
    docker_client: Any,  # noqa: F811
    bundle_image: str,
    make_kube_plan: Any,
    launch_inputs: dict[str, Any],
) -> None:
    """The bundle pod's ``dirs`` init container, as rendered (command, user,
    capabilities), run on world-writable mounts as emptyDirs are: afterwards
    the socket dir is the relay's, the queue supervise's, the logs root's,
    each 0700, and another daemon user can write none of them."""
    from bot_bottle_kubernetes.render import render_bottle

    objects = render_bottle(make_kube_plan("full"), **launch_inputs)
    pod = next(
        o for o in objects if o["kind"] == "Pod" and o["metadata"]["name"].endswith("-sidecars")
    )
    init = next(c for c in pod["spec"]["initContainers"] if c["name"] == "dirs")
    sc = init["securityContext"]
    paths = [m["mountPath"] for m in init["volumeMounts"]]
    script = (
        f"{' '.join(init['command'][:2])} '{init['command'][2]}' && "
        + " && ".join(f"stat -c '%n %u %a' {p}" for p in paths)
        + f" && if {_as('egress')} touch {SOCK_DIR}/x 2>/dev/null; then echo WRITABLE; fi"
        # The positive control: the relay's user can (so the check can fail).
        + f" && {_as('relay')} touch {SOCK_DIR}/y && echo RELAY-WRITES"
    )
    out = docker_client.containers.run(
        bundle_image,
        entrypoint=["sh", "-c", script],
        command=[],
        user=str(sc["runAsUser"]),
        cap_drop=["ALL"],
        cap_add=[*sc["capabilities"]["add"], "SETUID", "SETGID"],  # setpriv, for the check only
        security_opt=["no-new-privileges"],
        tmpfs={p: "mode=0777" for p in paths},
        read_only=sc["readOnlyRootFilesystem"],
        labels={"bot-bottle.test": "k8s-relay-transport"},
        remove=True,
    ).decode()
    stats = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith("/"))
    relay, supervise = DAEMON_USERS["relay"].uid, DAEMON_USERS["supervise"].uid
    assert stats == {
        SOCK_DIR: f"{relay} 700",
        "/var/lib/bot-bottle/queue": f"{supervise} 700",
        "/var/log/bot-bottle": "0 700",
    }, out
    assert "WRITABLE" not in out and "RELAY-WRITES" in out


def _as(daemon: str) -> str:
    uid = DAEMON_USERS[daemon].uid
    return f"setpriv --reuid={uid} --regid={uid} --clear-groups"


def test_the_egress_config_init_container_seeds_a_root_only_writable_copy(
    docker_client: Any,  # noqa: F811
    bundle_image: str,
    make_kube_plan: Any,
    launch_inputs: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The bundle pod's ``egress-config`` init container, as rendered, on a
    read-only etc (the ConfigMap) and a world-writable emptyDir: the copy is
    the ConfigMap's file, 0644 in a 0755 directory of root's, so egress's
    user reads it and cannot replace it (live route changes are root's)."""
    from bot_bottle_kubernetes.egress_live import LIVE_CONFIG, LIVE_DIR
    from bot_bottle_kubernetes.render import render_bottle

    objects = render_bottle(make_kube_plan("full"), **launch_inputs)
    pod = next(
        o for o in objects if o["kind"] == "Pod" and o["metadata"]["name"].endswith("-sidecars")
    )
    etc_map = next(o for o in objects if o["metadata"]["name"].endswith("-etc"))
    init = next(c for c in pod["spec"]["initContainers"] if c["name"] == "egress-config")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "etc")
    etc = tmp_path / "etc"
    for item in volume["configMap"]["items"]:
        (etc / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (etc / item["path"]).write_text(etc_map["data"][item["key"]])
    etc.chmod(0o755)
    for d in etc.rglob("*"):
        d.chmod(0o755 if d.is_dir() else 0o644)
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    sc = init["securityContext"]
    script = (
        f"{' '.join(init['command'][:2])} '{init['command'][2]}' && "
        f"stat -c '%n %u %a' {LIVE_DIR} {LIVE_CONFIG} && cat {LIVE_CONFIG} && "
        f"if {_as('egress')} cat {LIVE_CONFIG} >/dev/null; then echo EGRESS-READS; fi && "
        f"if {_as('egress')} touch {LIVE_DIR}/x 2>/dev/null; then echo WRITABLE; fi"
    )
    out = docker_client.containers.run(
        bundle_image,
        entrypoint=["sh", "-c", script],
        command=[],
        user=str(sc["runAsUser"]),
        cap_drop=["ALL"],
        cap_add=[*sc["capabilities"].get("add", []), "SETUID", "SETGID"],  # setpriv, check only
        security_opt=["no-new-privileges"],
        volumes={str(etc): {"bind": mounts["etc"]["mountPath"], "mode": "ro"}},
        tmpfs={mounts["egress-live"]["mountPath"]: "mode=0777"},
        read_only=sc["readOnlyRootFilesystem"],
        labels={"bot-bottle.test": "k8s-relay-transport"},
        remove=True,
    ).decode()
    stats = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith("/"))
    assert stats == {LIVE_DIR: "0 755", LIVE_CONFIG: "0 644"}, out
    assert (etc / "egress/egress.json").read_text() in out
    assert "EGRESS-READS" in out and "WRITABLE" not in out
