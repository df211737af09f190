"""A fake Kubernetes API server on loopback, for driving the real ``kubernetes`` client.

No API server can be installed on these machines (no kube-apiserver, kind or
k3s in the reachable registries), so the backend's cluster side is tested
against this. It is a real HTTP server on 127.0.0.1 that speaks the REST and
websocket protocols the official client speaks; what it fakes is documented
here, plainly, so nobody mistakes a pass for a real cluster's word.

Faithful:

- Every body (create, replace, and the ``DeleteOptions`` of a delete) is
  validated against the official OpenAPI schema of :data:`K8S_VERSION`
  (the JSON schemas ``kubernetes-validate`` generates from kubernetes'
  ``api/openapi-spec``), in its *strict* form: an unknown field is a 400
  like ``fieldValidation=Strict`` gives, a missing required field or a
  wrong type is a 422/400. The URL's kind, apiVersion and namespace must
  match the body's.
- Status objects for errors (``NotFound``, ``AlreadyExists``, ``Conflict``,
  ``Invalid``, ``BadRequest``) shaped as the real server's, so the client's
  ``ApiException.status`` and body are what a cluster returns.
- ``resourceVersion`` optimistic concurrency on replace (a Lease renewal with
  a stale version gets 409 Conflict).
- ``labelSelector`` on lists (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``,
  ``k in (a,b)``, ``k notin (a,b)``).
- Garbage collection by ``ownerReferences``: deleting an owner with
  ``propagationPolicy`` ``Background`` or ``Foreground`` (or none: both are
  cascading for these kinds) deletes its dependents, recursively; ``Orphan``
  strips the reference instead. An object created with an owner uid that does
  not exist is collected, as the real collector does.
- ``pods/exec`` over a real websocket (RFC 6455 handshake and framing, written
  here), subprotocols ``v5.channel.k8s.io`` and ``v4.channel.k8s.io``: channel
  byte 0 stdin, 1 stdout, 2 stderr, 3 error (a ``Status`` whose
  ``details.causes[reason=ExitCode]`` carries a non-zero exit code, exactly
  the kubelet's), 4 resize (``{"Width":..,"Height":..}``), and v5's close
  frame (255, channel) for stdin EOF.

Faked (the test decides what a real node would have done):

- Nothing runs. A pod's status is set by the fake "scheduler" at create time:
  ``Running`` with a podIP and hostIP and Ready conditions, unless a test
  set :attr:`FakeApiServer.pod_phase` (e.g. ``Pending`` forever or
  ``Failed``). There are no containers, so exec runs the *test's* handler
  (:attr:`FakeApiServer.exec_handler`), which sees the pod, container, argv,
  TTY flag, stdin and resize events and returns an exit code; the default
  handler answers 126 ("no handler"), so an unscripted exec never passes.
- GC is synchronous (a real collector is eventually consistent; the backend
  must not rely on either).
- HTTPS with a CA made at start (named in the kubeconfig it writes); the
  bearer token is not checked (authentication is the cluster's business).
- Discovery (``/api``, ``/apis``) is not served: the backend uses fixed paths.
- Fault injection: :meth:`FakeApiServer.fail_create` makes the n-th create
  of the run answer 500, to prove a launch that dies there leaves nothing;
  :attr:`FakeApiServer.fail_deletes` makes every delete answer 500.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import queue
import re
import socket
import ssl
import struct
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: The Kubernetes version whose OpenAPI schemas every body is checked against.
K8S_VERSION = "1.33.0"

#: (api prefix, plural) -> (apiVersion, kind, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("/api/v1", "pods"): ("v1", "Pod", True),
    ("/api/v1", "secrets"): ("v1", "Secret", True),
    ("/api/v1", "configmaps"): ("v1", "ConfigMap", True),
    ("/api/v1", "services"): ("v1", "Service", True),
    ("/api/v1", "serviceaccounts"): ("v1", "ServiceAccount", True),
    ("/api/v1", "namespaces"): ("v1", "Namespace", False),
    ("/api/v1", "nodes"): ("v1", "Node", False),
    ("/apis/coordination.k8s.io/v1", "leases"): ("coordination.k8s.io/v1", "Lease", True),
    ("/apis/networking.k8s.io/v1", "networkpolicies"): (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        True,
    ),
    ("/apis/node.k8s.io/v1", "runtimeclasses"): ("node.k8s.io/v1", "RuntimeClass", False),
    ("/apis/apps/v1", "daemonsets"): ("apps/v1", "DaemonSet", True),
}

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def validate_delete_options(obj: dict[str, Any], version: str = K8S_VERSION) -> list[str]:
    """``DeleteOptions`` lives in meta/v1, which ``kubernetes_validate.validate``
    cannot look up from a body's ``apiVersion: v1``: load that schema by name."""
    import jsonschema
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = schema_contents(f"{folder}/deleteoptions-meta-v1.json", version)
    defs = schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def validate_strict(obj: dict[str, Any], version: str = K8S_VERSION) -> list[str]:
    """Every schema error of ``obj`` against the pinned official schema (strict)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    if obj.get("kind") == "DeleteOptions":
        return validate_delete_options(obj, version)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "<root>"
        return [f"{where}: {e.message}"]
    except SchemaNotFoundError as e:
        return [e.message]
    return []


def _status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 300 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.body = _status(code, reason, message, **details)
        self.code = code


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_SEL_IN = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in _split_selector(selector):
        term = term.strip()
        if m := _SEL_IN.match(term):
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            inside = key in labels and labels[key] in vals
            if (op == "in") != inside:
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class ExecSession:
    """One ``pods/exec`` call as the test's handler sees it."""

    namespace: str
    pod: str
    container: str
    argv: list[str]
    tty: bool
    protocol: str
    _stdin: queue.Queue[bytes | None] = field(default_factory=queue.Queue)
    resizes: list[dict[str, int]] = field(default_factory=list)
    _send: Callable[[int, bytes], None] = lambda _c, _d: None

    def read_stdin(self, timeout: float = 10.0) -> bytes:
        """All of stdin until the client closes it (v5 close, or the socket)."""
        out = b""
        while True:
            try:
                chunk = self._stdin.get(timeout=timeout)
            except queue.Empty:
                return out
            if chunk is None:
                return out
            out += chunk

    def stdout(self, data: bytes) -> None:
        self._send(1, data)

    def stderr(self, data: bytes) -> None:
        self._send(2, data)


ExecHandler = Callable[[ExecSession], int]


def _no_handler(session: ExecSession) -> int:
    session.stderr(b"fake apiserver: no exec handler scripted for this call\n")
    return 126


class FakeApiServer:
    def __init__(self, version: str = K8S_VERSION) -> None:
        self.version = version
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.lock = threading.RLock()
        self._rv = itertools.count(1000)
        self._creates = 0
        self._fail_at: int | None = None
        #: Deletes answer 500 while True (an API server that fails mid-teardown).
        self.fail_deletes = False
        #: Phase the fake scheduler gives new pods ("Running", "Pending", "Failed").
        self.pod_phase = "Running"
        self.exec_handler: ExecHandler = _no_handler
        self.exec_log: list[ExecSession] = []
        #: Every (method, path, query) served, for tests that check parameters.
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self._pod_ips = itertools.count(10)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        # HTTPS with a CA of its own, named in the kubeconfig, as a cluster's is:
        # the client's TLS verification (REST and wss:// exec) is exercised.
        self.ca_pem, cert_pem, key_pem = _server_certificate()
        self._tls_dir = tempfile.TemporaryDirectory(prefix="fake-apiserver-")
        cert_file = Path(self._tls_dir.name) / "server.pem"
        cert_file.write_bytes(cert_pem + key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        # What a fresh cluster has: the namespaces and the API's service.
        for ns in ("default", "kube-system"):
            self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self.seed(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443, "protocol": "TCP"}]},
            }
        )

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"https://{host!s}:{port}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """What a client trusting this server's CA uses."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def start(self) -> FakeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._tls_dir.cleanup()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context is this server."""
        import yaml

        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fake",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    # -- test helpers ------------------------------------------------------

    def seed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Put ``obj`` in the store as if another actor created it (validated)."""
        errors = validate_strict(obj, self.version)
        if errors:
            raise ValueError(f"seed object is invalid: {errors}")
        with self.lock:
            return self._store(obj)

    def fail_create(self, nth: int | None) -> None:
        """Make the ``nth`` create from now on (1-based) answer 500."""
        with self.lock:
            self._creates = 0
            self._fail_at = nth

    @property
    def creates(self) -> int:
        return self._creates

    def all(self, kind: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                o
                for (k, ns, _), o in self.objects.items()
                if (kind is None or k == kind) and (namespace is None or ns == namespace)
            ]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.objects.get((kind, namespace, name))

    # -- store -------------------------------------------------------------

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = json.loads(json.dumps(obj))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("creationTimestamp", _now())
        if obj["kind"] == "Pod":
            self._schedule(obj)
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        self.objects[key] = obj
        return obj

    def _schedule(self, pod: dict[str, Any]) -> None:
        phase = self.pod_phase
        status: dict[str, Any] = {"phase": phase}
        if phase != "Pending":
            n = next(self._pod_ips)
            status |= {
                "podIP": f"10.244.0.{n}",
                "podIPs": [{"ip": f"10.244.0.{n}"}],
                "hostIP": "172.18.0.2",
                "startTime": _now(),
            }
        ready = "True" if phase == "Running" else "False"
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True" if phase != "Pending" else "False"},
            {"type": "Ready", "status": ready},
        ]
        pod["status"] = status

    def _uids(self, namespace: str) -> set[str]:
        return {o["metadata"]["uid"] for (_, ns, _), o in self.objects.items() if ns == namespace}

    def _collect(self) -> None:
        """The garbage collector: dependents of a deleted owner go too."""
        while True:
            doomed = []
            for key, o in self.objects.items():
                refs = o["metadata"].get("ownerReferences") or []
                if refs and not any(r["uid"] in self._uids(key[1]) for r in refs):
                    doomed.append(key)
            if not doomed:
                return
            for key in doomed:
                self.objects.pop(key, None)

    def _delete(self, key: tuple[str, str, str], policy: str | None) -> dict[str, Any]:
        obj = self.objects.pop(key)
        if policy == "Orphan":
            uid = obj["metadata"]["uid"]
            for o in self.objects.values():
                refs = o["metadata"].get("ownerReferences") or []
                kept = [r for r in refs if r["uid"] != uid]
                if len(kept) != len(refs):
                    if kept:
                        o["metadata"]["ownerReferences"] = kept
                    else:
                        o["metadata"].pop("ownerReferences", None)
        else:
            self._collect()
        return obj

    # -- HTTP --------------------------------------------------------------

    def _route(self, path: str) -> tuple[str, str, bool, str, str | None, str | None]:
        """-> (apiVersion, kind, namespaced, namespace, name, subresource)"""
        for (prefix, plural), (api_version, kind, namespaced) in RESOURCES.items():
            if not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :].split("/")
            ns = ""
            if namespaced and rest[0] == "namespaces" and len(rest) >= 3:
                ns, rest = rest[1], rest[2:]
            if not rest or rest[0] != plural:
                continue
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
            return api_version, kind, namespaced, ns, name, sub
        raise ApiError(404, "NotFound", f"the server could not find the requested resource {path}")

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path, query))
        if path.rstrip("/") == "/version":
            major, minor, _ = self.version.split(".")
            # Every field the real /version has (the typed client requires them).
            return 200, {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{self.version}",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        api_version, kind, namespaced, ns, name, sub = self._route(path)
        if sub is not None:
            raise ApiError(405, "MethodNotAllowed", f"subresource {sub} is not served by the fake")
        with self.lock:
            if method == "GET" and name is None:
                sel = (query.get("labelSelector") or [""])[0]
                items = [
                    o
                    for (k, ons, _), o in self.objects.items()
                    if k == kind
                    and (not ns or ons == ns)
                    and selector_matches(sel, o["metadata"].get("labels") or {})
                ]
                return 200, {
                    "apiVersion": api_version,
                    "kind": f"{kind}List",
                    "metadata": {"resourceVersion": str(next(self._rv))},
                    "items": items,
                }
            if method == "GET":
                assert name is not None
                obj = self.objects.get((kind, ns, name))
                if obj is None:
                    raise self._not_found(kind, name)
                return 200, obj
            if method == "POST" and name is None:
                return 201, self._create(api_version, kind, namespaced, ns, query, body)
            if method == "PUT" and name is not None:
                return 200, self._replace(api_version, kind, ns, name, query, body)
            if method == "DELETE" and name is not None:
                return 200, self._delete_request(kind, ns, name, query, body)
        raise ApiError(405, "MethodNotAllowed", f"{method} {path} is not served by the fake")

    def _not_found(self, kind: str, name: str) -> ApiError:
        plural = kind.lower() + "s"
        return ApiError(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)

    def _parse(self, api_version: str, kind: str, ns: str, body: bytes) -> dict[str, Any]:
        try:
            obj = json.loads(body or b"null")
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"body is not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "body is not a JSON object")
        if obj.get("apiVersion") != api_version or obj.get("kind") != kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}/{obj.get('kind')}) "
                f"does not match the expected API version ({api_version}/{kind})",
            )
        meta = obj.get("metadata") or {}
        if ns and meta.get("namespace", ns) != ns:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent "
                "on the request",
            )
        errors = validate_strict(obj, self.version)
        if errors:
            raise ApiError(
                422,
                "Invalid",
                f'{kind}.{api_version} "{meta.get("name", "")}" is invalid: ' + "; ".join(errors),
                kind=kind,
                name=meta.get("name", ""),
                causes=[{"reason": "FieldValueInvalid", "message": m} for m in errors],
            )
        if not meta.get("name"):
            raise ApiError(422, "Invalid", f"{kind}: metadata.name: Required value")
        if ns:
            meta["namespace"] = ns
        obj["metadata"] = meta
        return obj

    def _create(
        self,
        api_version: str,
        kind: str,
        namespaced: bool,
        ns: str,
        query: dict[str, list[str]],
        body: bytes,
    ) -> dict[str, Any]:
        obj = self._parse(api_version, kind, ns, body)
        self._creates += 1
        if self._fail_at is not None and self._creates == self._fail_at:
            raise ApiError(500, "InternalError", f"injected failure on create #{self._creates}")
        name = obj["metadata"]["name"]
        if namespaced and ("Namespace", "", ns) not in self.objects:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')
        if (kind, ns, name) in self.objects:
            plural = kind.lower() + "s"
            raise ApiError(
                409, "AlreadyExists", f'{plural} "{name}" already exists', name=name, kind=plural
            )
        for f in ("uid", "resourceVersion", "creationTimestamp"):
            obj["metadata"].pop(f, None)
        obj.pop("status", None)
        stored = self._store(obj)
        self._collect()
        return stored

    def _replace(
        self,
        api_version: str,
        kind: str,
        ns: str,
        name: str,
        query: dict[str, list[str]],
        body: bytes,
    ) -> dict[str, Any]:
        obj = self._parse(api_version, kind, ns, body)
        old = self.objects.get((kind, ns, name))
        if old is None:
            raise self._not_found(kind, name)
        if obj["metadata"]["name"] != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        sent_rv = obj["metadata"].get("resourceVersion")
        if sent_rv is not None and sent_rv != old["metadata"]["resourceVersion"]:
            plural = kind.lower() + "s"
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                name=name,
                kind=plural,
            )
        obj["metadata"]["uid"] = old["metadata"]["uid"]
        obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        if "status" in old:
            obj["status"] = old["status"]
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[(kind, ns, name)] = obj
        return obj

    def _delete_request(
        self, kind: str, ns: str, name: str, query: dict[str, list[str]], body: bytes
    ) -> dict[str, Any]:
        if self.fail_deletes:
            raise ApiError(500, "InternalError", "injected failure on delete")
        policy = (query.get("propagationPolicy") or [None])[0]
        if body.strip():
            try:
                opts = json.loads(body)
            except ValueError as e:
                raise ApiError(400, "BadRequest", f"body is not JSON: {e}") from None
            opts.setdefault("apiVersion", "v1")
            opts.setdefault("kind", "DeleteOptions")
            errors = validate_strict(opts, self.version)
            if errors:
                raise ApiError(422, "Invalid", "DeleteOptions is invalid: " + "; ".join(errors))
            policy = opts.get("propagationPolicy") or policy
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f"propagationPolicy {policy!r} is not supported")
        if (kind, ns, name) not in self.objects:
            raise self._not_found(kind, name)
        obj = self._delete((kind, ns, name), policy)
        # The real server answers with the object as it was deleted.
        obj["metadata"]["deletionTimestamp"] = _now()
        return obj

    # -- exec over websocket -----------------------------------------------

    def exec_ws(
        self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]]
    ) -> None:
        m = re.match(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec$", path)
        key = handler.headers.get("Sec-WebSocket-Key")
        if m is None or key is None:
            handler.send_error(400)
            return
        ns, pod_name = m.group(1), m.group(2)
        with self.lock:
            pod = self.objects.get(("Pod", ns, pod_name))
        offered = [
            p.strip() for p in (handler.headers.get("Sec-WebSocket-Protocol") or "").split(",")
        ]
        protocol = next(
            (p for p in ("v5.channel.k8s.io", "v4.channel.k8s.io") if p in offered), None
        )
        if pod is None or protocol is None:
            # A real server refuses the upgrade with a Status body.
            status = (
                self._not_found("Pod", pod_name).body
                if pod is None
                else _status(400, "BadRequest", "no supported channel protocol offered")
            )
            raw = json.dumps(status).encode()
            handler.send_response(status["code"])
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(raw)))
            handler.end_headers()
            handler.wfile.write(raw)
            return
        containers = [c["name"] for c in pod["spec"]["containers"]] + [
            c["name"]
            for c in pod["spec"].get("initContainers", [])
            if c.get("restartPolicy") == "Always"
        ]
        container = (query.get("container") or [containers[0]])[0]
        accept = base64.b64encode(
            hashlib.sha1((key + WS_GUID).encode(), usedforsecurity=False).digest()
        ).decode()
        handler.send_response(101)
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", accept)
        handler.send_header("Sec-WebSocket-Protocol", protocol)
        handler.end_headers()
        handler.wfile.flush()
        sock = handler.connection
        send_lock = threading.Lock()

        def send(channel: int, data: bytes) -> None:
            with send_lock:
                _ws_send(sock, bytes([channel]) + data)

        session = ExecSession(
            namespace=ns,
            pod=pod_name,
            container=container,
            argv=query.get("command") or [],
            tty=(query.get("tty") or ["false"])[0] == "true",
            protocol=protocol,
            _send=send,
        )
        self.exec_log.append(session)
        if container not in containers:
            send(
                3,
                json.dumps(
                    _status(
                        400, "BadRequest", f"container {container} is not valid for pod {pod_name}"
                    )
                ).encode(),
            )
            _ws_close(sock)
            return
        reader = threading.Thread(target=_ws_reader, args=(handler.rfile, session), daemon=True)
        reader.start()
        try:
            code = self.exec_handler(session)
        except Exception as e:  # the test's handler crashed: say so on the error channel
            send(3, json.dumps(_status(500, "InternalError", f"exec handler: {e!r}")).encode())
            _ws_close(sock)
            return
        if code == 0:
            err = {"metadata": {}, "status": "Success"}
        else:
            err = {
                "metadata": {},
                "status": "Failure",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        send(3, json.dumps(err).encode())
        _ws_close(sock)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query, keep_blank_values=True)
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    server.requests.append((method, parts.path, query))
                    server.exec_ws(self, parts.path, query)
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    code, payload = server.handle(method, parts.path, query, body)
                except ApiError as e:
                    code, payload = e.code, e.body
                raw = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

        return Handler


def _server_certificate() -> tuple[bytes, bytes, bytes]:
    """(CA cert, server cert for 127.0.0.1, server key), PEM, made now."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-apiserver CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


def _ws_send(sock: socket.socket, payload: bytes, opcode: int = 0x2) -> None:
    header = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        header += bytes([n])
    elif n < 1 << 16:
        header += bytes([126]) + struct.pack("!H", n)
    else:
        header += bytes([127]) + struct.pack("!Q", n)
    sock.sendall(header + payload)


def _ws_close(sock: socket.socket) -> None:
    with suppress(OSError):
        _ws_send(sock, struct.pack("!H", 1000), opcode=0x8)


def _read_exact(rfile: Any, n: int) -> bytes:
    data = rfile.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def _ws_frames(rfile: Any) -> Iterator[tuple[int, bytes]]:
    while True:
        b0, b1 = _read_exact(rfile, 2)
        opcode = b0 & 0x0F
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", _read_exact(rfile, 2))[0]
        elif n == 127:
            n = struct.unpack("!Q", _read_exact(rfile, 8))[0]
        mask = _read_exact(rfile, 4) if b1 & 0x80 else b""
        data = _read_exact(rfile, n) if n else b""
        if mask:
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        yield opcode, data


def _ws_reader(rfile: Any, session: ExecSession) -> None:
    try:
        for opcode, data in _ws_frames(rfile):
            if opcode == 0x8:
                break
            if opcode not in (0x1, 0x2) or not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == 0:
                session._stdin.put(payload)
            elif channel == 4:
                session.resizes.append(json.loads(payload))
            elif channel == 255 and payload[:1] == b"\x00":
                session._stdin.put(None)
    except (EOFError, OSError, ValueError):
        pass
    session._stdin.put(None)


@contextmanager
def running_fake(version: str = K8S_VERSION) -> Iterator[FakeApiServer]:
    server = FakeApiServer(version).start()
    try:
        yield server
    finally:
        server.stop()
