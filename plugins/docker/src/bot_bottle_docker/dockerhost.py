"""A minimal, dependency-free probe of the Docker engine API.

``doctor`` must say whether Docker is reachable without importing the docker
SDK (a backend plugin's dependency, not core's). This speaks just enough HTTP
over the engine's Unix socket or TCP port to call ``/_ping`` and ``/version``,
honouring ``DOCKER_HOST`` the way the docker CLI does.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_SOCKETS = (
    Path("/var/run/docker.sock"),
    Path.home() / ".docker/run/docker.sock",  # Docker Desktop (macOS)
)


class DockerUnreachable(Exception):
    """The engine could not be reached; the message says where and why."""


@dataclass(frozen=True)
class EngineInfo:
    host: str
    version: str
    api_version: str
    os: str
    runtimes: tuple[str, ...] = ()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def docker_host(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get("DOCKER_HOST"):
        return env["DOCKER_HOST"]
    for candidate in DEFAULT_SOCKETS:
        if candidate.exists():
            return f"unix://{candidate}"
    return f"unix://{DEFAULT_SOCKETS[0]}"


def _connection(
    host: str, environ: Mapping[str, str], timeout: float
) -> http.client.HTTPConnection:
    url = urlsplit(host)
    if url.scheme == "unix":
        return _UnixHTTPConnection(url.path, timeout)
    if url.scheme in ("tcp", "http", "https"):
        if not url.hostname:
            raise DockerUnreachable(f"DOCKER_HOST={host!r} names no host")
        tls = url.scheme == "https" or bool(environ.get("DOCKER_TLS_VERIFY"))
        port = url.port or (2376 if tls else 2375)
        if not tls:
            return http.client.HTTPConnection(url.hostname, port, timeout=timeout)
        ctx = ssl.create_default_context()
        cert_path = environ.get("DOCKER_CERT_PATH")
        if cert_path:
            ctx.load_verify_locations(str(Path(cert_path) / "ca.pem"))
            ctx.load_cert_chain(str(Path(cert_path) / "cert.pem"), str(Path(cert_path) / "key.pem"))
        return http.client.HTTPSConnection(url.hostname, port, timeout=timeout, context=ctx)
    raise DockerUnreachable(
        f"DOCKER_HOST={host!r}: scheme {url.scheme!r} is not supported by this check "
        "(use unix:// or tcp://)"
    )


def _get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path, headers={"Host": "docker"})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise DockerUnreachable(f"GET {path} answered HTTP {resp.status}: {body[:200]!r}")
    return body


def probe(environ: Mapping[str, str] | None = None, *, timeout: float = 3.0) -> EngineInfo:
    """Ping the engine and read its version; raise :class:`DockerUnreachable`."""
    env = os.environ if environ is None else environ
    host = docker_host(env)
    conn = _connection(host, env, timeout)
    try:
        _get(conn, "/_ping")
        version = json.loads(_get(conn, "/version"))
        info = json.loads(_get(conn, "/info"))
    except DockerUnreachable:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DockerUnreachable(f"cannot reach Docker at {host}: {exc}") from exc
    finally:
        conn.close()
    return EngineInfo(
        host=host,
        version=str(version.get("Version", "?")),
        api_version=str(version.get("ApiVersion", "?")),
        os=str(version.get("Os", "?")),
        runtimes=tuple(sorted((info.get("Runtimes") or {}).keys())),
    )


def image_exists(
    ref: str, environ: Mapping[str, str] | None = None, *, timeout: float = 3.0
) -> bool:
    """Whether the engine has the image ``ref`` locally (never pulls)."""
    from urllib.parse import quote

    env = os.environ if environ is None else environ
    host = docker_host(env)
    conn = _connection(host, env, timeout)
    try:
        conn.request("GET", f"/images/{quote(ref, safe='')}/json", headers={"Host": "docker"})
        resp = conn.getresponse()
        resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise DockerUnreachable(f"cannot reach Docker at {host}: {exc}") from exc
    finally:
        conn.close()
    if resp.status == 404:
        return False
    if resp.status != 200:
        raise DockerUnreachable(f"inspecting image {ref} answered HTTP {resp.status}")
    return True
