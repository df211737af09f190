"""A local HTTPS forge that speaks the deploy-key API of Gitea (Forgejo) or
GitHub, built from the forge's own published OpenAPI description.

Every request is checked against the spec subset in ``tests/forge_specs/``
(where each came from is written in its ``x-subset-of``): the path must match
one of the spec's path templates with a method it declares, path and query
parameters must be declared and of the declared type, a JSON body must
validate against the operation's body schema (jsonschema), and the auth
header must carry the token the way the forge takes it. A request the real
forge would reject is answered as it would be (404/400/422/401) *and*
recorded in :attr:`FakeForge.violations`, which the fixture turns into a test
failure. Gitea's responses are validated against the spec's ``DeployKey``
schema too.

Behind the API: keys per repository, ``on_change`` called with every live
public key after each change (a test points it at a real sshd's
``authorized_keys``), and switches for the failures a user meets (a 500 on
DELETE, a token without the scope).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema
from bot_bottle_testkit.egress import make_test_pki, serve_tls

SPECS = Path(__file__).parent / "forge_specs"
Kind = Literal["gitea", "forgejo", "github", "gitlab"]


@dataclass
class Key:
    id: int
    owner: str
    repo: str
    title: str
    key: str
    read_only: bool


@dataclass
class Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    spec: dict[str, Any]


@dataclass
class FakeForge:
    kind: Kind
    token: str
    port: int = 0
    ca_pem: Path = Path()
    repos: set[tuple[str, str]] = field(default_factory=set)
    keys: dict[int, Key] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    #: (method, path) of every request, in order.
    seen: list[tuple[str, str]] = field(default_factory=list)
    #: The Authorization header values received (to prove the token's form).
    auth_headers: list[str] = field(default_factory=list)
    fail_delete: bool = False
    token_lacks_scope: bool = False
    #: Seconds to wait before answering a POST (timeout tests).
    post_delay: float = 0.0
    on_change: Callable[[list[Key]], None] | None = None
    _next: int = 1

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def live_keys(self) -> list[Key]:
        return list(self.keys.values())


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (IP SAN: the
    provisioner checks the host name like any client): CA, cert, key."""
    pki = make_test_pki(
        directory, ["forge.test"], ips=["127.0.0.1"], ca_common_name="fake forge test CA", days=7
    )
    return pki.ca_cert, pki.server_cert, pki.server_key


def load_spec(kind: Kind) -> dict[str, Any]:
    return json.loads((SPECS / f"{kind}_deploy_keys.json").read_text())


def _operations(spec: dict[str, Any]) -> list[Operation]:
    base = spec.get("basePath", "")
    ops: list[Operation] = []
    for template, item in spec["paths"].items():
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(base + template))
        for method, op in item.items():
            ops.append(Operation(method.upper(), template, re.compile(f"^{pattern}$"), op))
    return ops


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def _param_type(spec: dict[str, Any], param: dict[str, Any]) -> str:
    # Swagger 2 puts the type on the parameter, OpenAPI 3 in its schema.
    return str(param.get("type") or param.get("schema", {}).get("type") or "string")


def _type_ok(kind: str, value: str) -> bool:
    if kind == "integer":
        return re.fullmatch(r"-?\d+", value) is not None
    if kind == "boolean":
        return value in ("true", "false")
    return True


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft4Validator:
    # Local refs (#/definitions/..., #/components/...) resolve against the spec.
    root = {**schema, "definitions": spec.get("definitions", {})}
    if "components" in spec:
        root["components"] = spec["components"]
    return jsonschema.Draft4Validator(root)


def _key_json(forge: FakeForge, key: Key) -> dict[str, Any]:
    url = f"{forge.base_url}/repos/{key.owner}/{key.repo}/keys/{key.id}"
    doc: dict[str, Any] = {
        "id": key.id,
        "key": key.key,
        "url": url,
        "title": key.title,
        "read_only": key.read_only,
        "created_at": "2026-12-04T10:00:00Z",
    }
    if forge.kind in ("gitea", "forgejo"):
        doc["fingerprint"] = "SHA256:fake"
        doc["key_id"] = 0
    elif forge.kind == "gitlab":
        del doc["read_only"], doc["url"]
        doc["can_push"] = not key.read_only
        doc["fingerprint_sha256"] = "SHA256:fake"
    else:
        doc["verified"] = True
    return doc


@contextmanager
def fake_forge(
    tmp: Path, kind: Kind, *, token: str, repos: set[tuple[str, str]]
) -> Iterator[FakeForge]:
    spec = load_spec(kind)
    ops = _operations(spec)
    ca, cert, key = make_pki(tmp / f"{kind}-pki")
    forge = FakeForge(kind=kind, token=token, ca_pem=ca, repos=set(repos))
    lock = threading.Lock()
    response_schema = {
        "gitea": "#/definitions/DeployKey",
        "forgejo": "#/definitions/DeployKey",
        "gitlab": "#/definitions/API_Entities_DeployKeysProject",
    }.get(kind)
    deploy_key = _resolve(spec, {"$ref": response_schema}) if response_schema else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, doc: Any = None) -> None:
            data = b"" if doc is None else json.dumps(doc).encode()
            self.send_response(status)
            if doc is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _reject(self, status: int, why: str) -> None:
            forge.violations.append(f"{self.command} {self.path}: {why}")
            self._send(status, {"message": why})

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            with lock:
                forge.seen.append((self.command, url.path))
            matched = [(op, op.regex.match(url.path)) for op in ops]
            hits = [(op, m) for op, m in matched if m]
            if not hits:
                self._reject(404, "no such path in the spec")
                return
            op_match = next(((op, m) for op, m in hits if op.method == self.command), None)
            if op_match is None:
                self._reject(405, "method not declared for this path in the spec")
                return
            op, m = op_match
            params = [_resolve(spec, p) for p in op.spec.get("parameters", [])]
            path_args = {k: unquote(v) for k, v in m.groupdict().items()}
            for p in params:
                if p["in"] == "path" and not _type_ok(_param_type(spec, p), path_args[p["name"]]):
                    self._reject(400, f"path parameter {p['name']} is not {_param_type(spec, p)}")
                    return
            declared = {p["name"]: p for p in params if p["in"] == "query"}
            for name, value in parse_qsl(url.query, keep_blank_values=True):
                if name not in declared:
                    self._reject(400, f"query parameter {name!r} is not declared")
                    return
                if not _type_ok(_param_type(spec, declared[name]), value):
                    self._reject(400, f"query parameter {name!r} has the wrong type")
                    return
            if not self._authorized():
                return
            body: Any = None
            schema = self._body_schema(op, params)
            if schema is not None:
                if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                    self._reject(415, "body is not application/json")
                    return
                try:
                    body = json.loads(raw or b"null")
                    _validator(spec, schema).validate(body)
                except (ValueError, jsonschema.ValidationError) as exc:
                    msg = exc.message if isinstance(exc, jsonschema.ValidationError) else "bad JSON"
                    self._reject(422, f"body does not match the spec: {msg}")
                    return
            elif raw:
                self._reject(400, "this operation takes no body")
                return
            self._serve(op, path_args, body)

        def _body_schema(self, op: Operation, params: list[dict[str, Any]]) -> Any:
            for p in params:
                if p["in"] == "body":
                    return p["schema"]
            content = op.spec.get("requestBody", {}).get("content", {})
            return content.get("application/json", {}).get("schema")

        def _authorized(self) -> bool:
            if forge.kind == "gitlab":
                # securityDefinitions.access_token_header: PRIVATE-TOKEN.
                header = self.headers.get("PRIVATE-TOKEN", "")
                ok = header == forge.token
            else:
                header = self.headers.get("Authorization", "")
                scheme, _, value = header.partition(" ")
                # Gitea's AuthorizationHeaderToken is "token <t>" (it also takes
                # "Bearer"); GitHub takes "Bearer <t>" and "token <t>".
                ok = scheme.lower() in ("token", "bearer") and value == forge.token
            with lock:
                forge.auth_headers.append(header)
            if not ok:
                self._send(401, {"message": "401 Unauthorized"})
                return False
            if forge.token_lacks_scope:
                self._send(403, {"message": "token does not have at least one of required scope"})
                return False
            return True

        def _serve(self, op: Operation, args: dict[str, str], body: Any) -> None:
            if forge.kind == "gitlab":
                # ':id' is the project's URL-encoded full path.
                owner, _, repo = args["id"].rpartition("/")
                ident = args.get("key_id")
            else:
                owner, repo = args["owner"], args["repo"]
                ident = args.get("id") or args.get("key_id")
            if (owner, repo) not in forge.repos:
                self._send(404, {"message": "404 Project Not Found"})
                return
            with lock:
                if self.command == "GET" and ident is None:
                    mine = [_key_json(forge, k) for k in forge.keys.values()
                            if (k.owner, k.repo) == (owner, repo)]  # fmt: skip
                    page = int(dict(parse_qsl(urlsplit(self.path).query)).get("page", "1"))
                    self._respond(200, mine if page == 1 else [], many=True)
                    return
                if self.command == "POST":
                    import time

                    time.sleep(forge.post_delay)
                    for k in forge.keys.values():
                        if (k.owner, k.repo) == (owner, repo) and (
                            k.title == body.get("title")
                            or k.key.split()[:2] == body["key"].split()[:2]
                        ):
                            if forge.kind == "gitlab":
                                taken = {
                                    "deploy_key.fingerprint_sha256": ["has already been taken"]
                                }
                                self._send(400, {"message": taken})
                            else:
                                self._send(422, {"message": "Key title has been used"})
                            return
                    read_only = (
                        not body.get("can_push", False)
                        if forge.kind == "gitlab"
                        else bool(body.get("read_only", False))
                    )
                    new = Key(forge._next, owner, repo, str(body.get("title", "")), body["key"],
                              read_only)  # fmt: skip
                    forge._next += 1
                    forge.keys[new.id] = new
                    self._changed()
                    self._respond(201, _key_json(forge, new))
                    return
                found = forge.keys.get(int(ident or 0))
                if found is None or (found.owner, found.repo) != (owner, repo):
                    self._send(404, {"message": "Not Found"})
                    return
                if self.command == "GET":
                    self._respond(200, _key_json(forge, found))
                    return
                if forge.fail_delete:
                    self._send(500, {"message": "internal error"})
                    return
                del forge.keys[found.id]
                self._changed()
                self._send(204)

        def _respond(self, status: int, doc: Any, *, many: bool = False) -> None:
            if deploy_key is not None:
                validator = _validator(spec, deploy_key)
                for item in doc if many else [doc]:
                    errors = [e.message for e in validator.iter_errors(item)]
                    if errors:
                        forge.violations.append(f"fake's own response breaks the spec: {errors}")
            self._send(status, doc)

        def _changed(self) -> None:
            if forge.on_change is not None:
                forge.on_change(list(forge.keys.values()))

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

    with serve_tls(Handler, cert, key) as server:
        forge.port = server.server_address[1]
        yield forge
