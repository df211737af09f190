"""Whether gVisor (``runsc``) can run this bottle design on this engine.

Registered is not enough. The agent's proxy, git-gate and supervise
endpoints are ``127.0.0.1`` ports served by a relay container (runc) that
joins the agent's network namespace. Under runsc the agent's loopback is
gVisor's own network stack, inside the sandbox; a process outside it, in
the same kernel namespace, is not on that loopback. And runsc with a
network stack refuses to start in a namespace it takes for the root one
("cannot run with network enabled in root network namespace", seen with
Debian's runsc 20221219 under Docker 20.10), so it must be registered with
``--network=none``. The probe checks exactly what a bottle needs: a runsc
container with no network starts, and a runc container in its namespace
serves a port the sandbox can connect to on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import docker

#: The runtime's name in the engine (``BOT_BOTTLE_GVISOR_RUNTIME``, default runsc).
RUNTIME = os.environ.get("BOT_BOTTLE_GVISOR_RUNTIME", "runsc")
PROBE_PORT = 18099
_CACHE: dict[str, GvisorState] = {}

_SERVE = (
    "import socket\n"
    f"s = socket.create_server(('127.0.0.1', {PROBE_PORT}))\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'relay-ok'); c.close()\n"
)
_CONNECT = (
    "import socket, time\n"
    "for _ in range(50):\n"
    "    try:\n"
    f"        print(socket.create_connection(('127.0.0.1', {PROBE_PORT}), 1).recv(16).decode())\n"
    "        break\n"
    "    except OSError as e:\n"
    "        err = e; time.sleep(0.1)\n"
    "else:\n"
    "    print('no relay:', err)\n"
)


@dataclass(frozen=True)
class GvisorState:
    usable: bool
    detail: str


def registered(client: docker.DockerClient) -> bool:
    return RUNTIME in (client.info().get("Runtimes") or {})


def probe(client: docker.DockerClient, image: str) -> GvisorState:
    """Run the probe once per engine and process (``image`` needs python)."""
    info = client.info()
    if RUNTIME not in (info.get("Runtimes") or {}):
        return GvisorState(False, f"{RUNTIME} is not registered with the Docker engine")
    key = f"{info.get('ID')}:{image}"
    if key not in _CACHE:
        _CACHE[key] = _probe(client, image)
    return _CACHE[key]


def _probe(client: docker.DockerClient, image: str) -> GvisorState:
    import docker.errors

    tag = uuid.uuid4().hex[:8]
    labels = {"bot-bottle.role": "gvisor-probe"}
    made: list[Any] = []
    try:
        sandbox = client.containers.create(
            image, entrypoint=["sleep", "60"], command=[], name=f"bb-gvisor-probe-{tag}",
            runtime=RUNTIME, network_mode="none", labels=labels,
        )  # fmt: skip
        made.append(sandbox)
        try:
            sandbox.start()
        except docker.errors.APIError as exc:
            return GvisorState(False, f"runsc cannot start a container here: {_short(exc)}")
        relay = client.containers.run(
            image, entrypoint=["python3", "-c", _SERVE], command=[],
            name=f"bb-gvisor-probe-relay-{tag}", network_mode=f"container:{sandbox.id}",
            labels=labels, detach=True,
        )  # fmt: skip
        made.append(relay)
        result = sandbox.exec_run(["python3", "-c", _CONNECT])
        out = cast(bytes, result.output).decode("utf-8", "replace").strip()
        if "relay-ok" in out:
            return GvisorState(True, "runsc runs the agent; the relay reaches its loopback")
        return GvisorState(
            False,
            "under runsc the agent's loopback is gVisor's own network stack: the relay "
            "container in its network namespace cannot serve its 127.0.0.1 endpoints "
            f"({out[-120:] or 'no answer'})",
        )
    except docker.errors.DockerException as exc:
        return GvisorState(False, f"the runsc probe failed: {_short(exc)}")
    finally:
        for c in made:
            with contextlib.suppress(docker.errors.DockerException):
                c.remove(force=True)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    return text.strip().splitlines()[0][-300:] if text.strip() else type(exc).__name__
