"""The CI engine path: a real Docker engine, real containers, real networks.

* A container on an ``--internal`` network reaches a neighbour on the same
  network by name (Docker's DNS), and cannot reach a listener on another
  network; a positive control on that other network proves the listener
  answers, so the refusal is real.
* Characterisation of the gap a Docker backend must close: ``--internal`` removes
  the route *off* the machine, not the route to the host itself. A container
  there still reaches a service bound on any host address. The Docker backend
  must close that gap with its own mechanism; this test keeps the fact in view
  and fails if an engine upgrade changes it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.docker

PORT = 18080
PERL_SERVER = (
    "perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>{port},Listen=>5,"
    "ReuseAddr=>1) or die; while($c=$s->accept){{print $c qq({reply}\\n); close $c}}'"
)
# bash's /dev/tcp is the client: the base image has no curl/nc, and it is
# enough to tell "connected" from "refused/unreachable".
CONNECT = (
    "if timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{port} && cat <&3' 2>/dev/null; "
    "then echo CONNECTED; else echo UNREACHABLE; fi"
)
WAIT_FOR = (
    "for i in $(seq 100); do timeout 2 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null "
    "&& break; sleep 0.1; done; "
)


class HostListener:
    """A TCP listener on a host address that records every connection."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(peer[0])
            conn.sendall(b"host\n")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def nets(docker_client, base_image: str, unique: str) -> Iterator[dict]:
    labels = {"bot-bottle.test": unique}
    internal = docker_client.networks.create(
        f"bbtest-internal-{unique}", driver="bridge", internal=True, labels=labels
    )
    outside = docker_client.networks.create(
        f"bbtest-outside-{unique}", driver="bridge", labels=labels
    )
    containers: list = []

    def start(name: str, network, command: str):
        c = docker_client.containers.run(
            base_image, ["bash", "-c", command], name=f"bbtest-{name}-{unique}",
            network=network.name, detach=True, labels=labels,
        )  # fmt: skip
        containers.append(c)
        return c

    try:
        yield {"internal": internal, "outside": outside, "start": start, "unique": unique}
    finally:
        for c in containers:
            c.remove(force=True)
        internal.remove()
        outside.remove()


def _finish(container, timeout: float = 60) -> str:
    code = container.wait(timeout=timeout)["StatusCode"]
    out = container.logs().decode()
    assert code == 0, out
    return out


def _ip(container, network) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]


def test_internal_network_resolves_neighbours_but_reaches_no_other_network(nets) -> None:
    internal, outside, start, u = nets["internal"], nets["outside"], nets["start"], nets["unique"]
    start("neighbour", internal, PERL_SERVER.format(port=PORT, reply="neighbour"))
    far = start("far", outside, PERL_SERVER.format(port=PORT, reply="far"))
    far_ip = _ip(far, outside)

    # Positive control first: the far listener answers on its own network.
    control = start(
        "control", outside, WAIT_FOR.format(host=far_ip, port=PORT)
        + CONNECT.format(host=far_ip, port=PORT),
    )  # fmt: skip
    assert "far\nCONNECTED" in _finish(control)

    neighbour = f"bbtest-neighbour-{u}"
    client = start(
        "client", internal,
        WAIT_FOR.format(host=neighbour, port=PORT)
        + CONNECT.format(host=neighbour, port=PORT) + "; "
        + CONNECT.format(host=far_ip, port=PORT) + "; "
        + f"RES_OPTIONS='timeout:1 attempts:1' getent hosts bbtest-far-{u} || echo NO-NAME",
    )  # fmt: skip
    out = _finish(client).splitlines()
    assert out == ["neighbour", "CONNECTED", "UNREACHABLE", "NO-NAME"], out


def test_internal_network_still_reaches_the_host_itself(nets) -> None:
    internal, outside, start = nets["internal"], nets["outside"], nets["start"]
    outside.reload()
    host_addr = outside.attrs["IPAM"]["Config"][0]["Gateway"]  # a host address we created
    listener = HostListener(host_addr)
    try:
        client = start("hostprobe", internal, CONNECT.format(host=host_addr, port=listener.port))
        out = _finish(client)
        deadline = time.monotonic() + 5
        while not listener.accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        # The gap is real: the backend must not rely on --internal alone.
        assert "CONNECTED" in out
        internal.reload()
        subnet = ipaddress.ip_network(internal.attrs["IPAM"]["Config"][0]["Subnet"])
        assert [ipaddress.ip_address(a) in subnet for a in listener.accepted] == [True]
    finally:
        listener.close()


def test_pruning_build_stages_spares_a_concurrent_builds_young_stage(
    docker_client, base_image: str, tmp_path
) -> None:
    """Two bottles started at once on a fresh machine build at once: the first
    to finish pruned the other's dangling stage image mid-build ("No such
    image"). A stage younger than the prune age survives."""
    import io

    from bot_bottle_docker.images import STAGE_LABEL, DockerCLI

    df = f"FROM {base_image}\nLABEL {STAGE_LABEL}=install\nRUN echo {tmp_path.name} > /x\n"
    image, _ = docker_client.images.build(fileobj=io.BytesIO(df.encode()), rm=True)
    try:
        assert not image.tags  # dangling, as a non-final stage is
        DockerCLI().prune_stages(io.StringIO())
        docker_client.images.get(image.id)  # still there
    finally:
        docker_client.images.remove(image.id, force=True)


def test_launch_image_checks_through_the_sdk_answer_as_the_cli(docker_client, base_image) -> None:
    """A launch looks its images up through the open SDK client (no CLI
    process each); the answers must be the CLI's, or a launch would build an
    image that exists or use one that does not."""
    from bot_bottle_docker.images import DockerCLI, EngineChecks

    cli, sdk = DockerCLI(), EngineChecks(docker_client)
    assert sdk.image_id(base_image) == cli.image_id(base_image) is not None
    missing = "bot-bottle/no-such-image:0000000000000000"
    assert sdk.image_id(missing) is None and cli.image_id(missing) is None
    assert sdk.machine() == cli.machine()


def test_teardown_leaves_the_network_while_the_bundle_goes(docker_client, base_image) -> None:
    """Teardown unplugs the bundle and removes its network while the bundle's
    removal runs; a network still in use is left for the step after the
    bundle (then for the network's own step and cleanup), never dropped
    silently."""
    import docker.errors

    from bot_bottle_docker.backend import _NetworkDrop

    tag = f"bb-test-drop-{os.getpid()}"
    net = docker_client.networks.create(tag, driver="bridge", labels={"bb-test": tag})
    started: list = []
    try:
        for i in range(2):
            started.append(docker_client.containers.run(
                base_image, ["sleep", "infinity"], name=f"{tag}-{i}", network=tag,
                detach=True, init=True, labels={"bb-test": tag},
            ))  # fmt: skip
        bundle, other = started
        removed: set[str] = set()
        drop = _NetworkDrop(net, bundle.id, removed)
        drop.early()  # `other` still uses it: left as it is
        assert net.id not in removed
        net.reload()
        with pytest.raises(docker.errors.APIError):
            drop.after_bundle()  # the bundle's step reports it, the network's retries
        other.remove(force=True)
        drop.early()
        assert net.id in removed
        with pytest.raises(docker.errors.NotFound):
            docker_client.networks.get(net.id)
        bundle.reload()
        assert bundle.status == "running"  # unplugged, not stopped
        drop.after_bundle()  # already gone: nothing to do, no error
    finally:
        for c in started:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            net.remove()
