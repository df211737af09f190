"""The cluster side: a kube context, a thin REST layer over the official client.

Objects are sent as the exact dicts ``render`` made, through the official
client's own transport, auth and TLS (``ApiClient.param_serialize`` and
``call_api``), not through its generated models: the models would drop an
unknown field on the client side before ``fieldValidation=Strict`` could
refuse it on the server. Every create and replace carries
``fieldValidation=Strict`` (the server default since 1.23 is Warn, which
drops unknown fields silently). Exec uses the client's websocket ``stream``.

The ``kubernetes`` package is large: it is imported here, lazily, and this
module is imported only when a cluster is actually used.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot_bottle.contracts.backend import ExecResult
from bot_bottle.errors import BotBottleError

#: kind -> (API path prefix, plural, namespaced); the kinds a bottle uses and
#: those ``doctor`` and the fence read.
KINDS: dict[str, tuple[str, str, bool]] = {
    "Pod": ("/api/v1", "pods", True),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Service": ("/api/v1", "services", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Namespace": ("/api/v1", "namespaces", False),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "RuntimeClass": ("/apis/node.k8s.io/v1", "runtimeclasses", False),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
}

#: The oldest server the backend runs on: native sidecars (init containers
#: with ``restartPolicy: Always``) are on by default from 1.29.
MIN_SERVER = (1, 29)

NO_CONTEXT_HINT = (
    "point bot-bottle at a cluster: set KUBECONFIG (or write ~/.kube/config) to a "
    "kubeconfig with a current context, or name one in BOT_BOTTLE_K8S_CONTEXT; "
    "`kubectl config current-context` shows what the client would use"
)


class KubeError(BotBottleError):
    """The cluster refused or could not be reached."""


class ApiFailure(KubeError):
    """A request the API server answered with an error ``Status``."""

    def __init__(self, status: int, reason: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class KubeTarget:
    """Which cluster and namespace: the operator's kube context, resolved."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None

    @classmethod
    def from_env(
        cls, namespace: str | None, environ: Mapping[str, str] | None = None
    ) -> KubeTarget:
        """``KUBECONFIG`` as kubectl reads it; ``BOT_BOTTLE_K8S_CONTEXT`` picks a
        context other than the current one."""
        env = os.environ if environ is None else environ
        return cls(context=env.get("BOT_BOTTLE_K8S_CONTEXT") or None, namespace=namespace)


def _kubeconfig_files(target: KubeTarget) -> list[str]:
    if target.kubeconfig:
        return [target.kubeconfig]
    # As kubectl: an empty KUBECONFIG counts as unset.
    env = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if env:
        return env
    return [str(Path("~/.kube/config").expanduser())]


def context_problem(target: KubeTarget) -> str | None:
    """Why there is no usable kube context, or None; reads files only (cheap)."""
    files = [f for f in _kubeconfig_files(target) if Path(f).is_file()]
    if not files:
        return "no kube context: no kubeconfig file found"
    try:
        merged = _merged_config(files)
    except KubeError as e:
        return str(e)
    name = target.context or merged.get("current-context")
    if not name:
        return "no kube context: the kubeconfig names no current context"
    if not any(c.get("name") == name for c in merged["contexts"] if isinstance(c, dict)):
        return f"no kube context: context {name!r} is not in the kubeconfig"
    return None


def connect(target: KubeTarget, *, timeout: float = 30.0) -> Kube:
    """A client for the operator's kube context; a clear error when there is none.

    No cluster guessing: without a kubeconfig that names a current context
    (or the context option), this refuses before anything is created.
    """
    problem = context_problem(target)
    if problem is not None:
        raise KubeError(problem, hint=NO_CONTEXT_HINT)
    files = [f for f in _kubeconfig_files(target) if Path(f).is_file()]
    from kubernetes import config as kconfig
    from kubernetes.config.config_exception import ConfigException

    try:
        loader = kconfig.kube_config.KubeConfigLoader(
            config_dict=_merged_config(files),
            active_context=target.context,
            config_base_path=str(Path(files[0]).parent),
        )
        namespace = target.namespace or loader.current_context["context"].get("namespace")
        from kubernetes.client import ApiClient, Configuration

        configuration = Configuration()
        loader.load_and_set(configuration)
    except (ConfigException, KeyError, TypeError, ValueError) as e:
        raise KubeError(f"no usable kube context: {e}", hint=NO_CONTEXT_HINT) from None
    return Kube(ApiClient(configuration), namespace or "default", timeout=timeout)


def _merged_config(files: Sequence[str]) -> dict[str, Any]:
    import yaml

    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    for f in files:
        try:
            doc = yaml.safe_load(Path(f).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise KubeError(f"cannot read kubeconfig {f}: {e}", hint=NO_CONTEXT_HINT) from None
        if not isinstance(doc, dict):
            raise KubeError(f"kubeconfig {f} is not a mapping", hint=NO_CONTEXT_HINT)
        for key in ("clusters", "users", "contexts"):
            merged[key] += doc.get(key) or []
        if "current-context" in doc and "current-context" not in merged:
            merged["current-context"] = doc["current-context"]
    return merged


def object_path(
    obj_or_kind: Mapping[str, Any] | str, namespace: str, name: str | None = None
) -> str:
    kind = obj_or_kind if isinstance(obj_or_kind, str) else str(obj_or_kind["kind"])
    try:
        prefix, plural, namespaced = KINDS[kind]
    except KeyError:
        raise KubeError(f"bot-bottle does not manage objects of kind {kind}") from None
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


class Kube:
    """The REST calls the backend makes, with Kubernetes errors turned into ours."""

    def __init__(self, api_client: Any, namespace: str, *, timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        client = self.api_client
        try:
            m, url, headers, data, post = client.param_serialize(
                method,
                path,
                query_params=list(query) or None,
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                body=dict(body) if body is not None else None,
                auth_settings=["BearerToken"],
            )
            response = client.call_api(m, url, headers, data, post, _request_timeout=self.timeout)
            raw = response.read()
        except ApiException as e:  # raised by the transport itself
            raise self._failure(e.status or 0, e.body) from None
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise KubeError(
                f"cannot reach the Kubernetes API server: {e}",
                hint="check the cluster is up and the kube context points at it",
            ) from None
        if not 200 <= response.status < 300:
            raise self._failure(response.status, raw)
        return json.loads(raw) if raw else {}

    @staticmethod
    def _failure(status: int, raw: bytes | str | None) -> ApiFailure:
        reason, message = "", f"HTTP {status}"
        try:
            body = json.loads(raw or b"{}")
            reason = str(body.get("reason") or "")
            message = str(body.get("message") or message)
        except (ValueError, AttributeError):
            pass
        hint = None
        if status == 403:
            hint = "the kube context's user lacks a permission bot-bottle needs in this namespace"
        return ApiFailure(status, reason, f"Kubernetes API: {message}", hint=hint)

    # -- objects -----------------------------------------------------------

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self.request(
            "POST",
            object_path(obj, self.namespace),
            query=[("fieldValidation", "Strict")],
            body=obj,
        )

    def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self.request(
            "PUT",
            object_path(obj, self.namespace, str(obj["metadata"]["name"])),
            query=[("fieldValidation", "Strict")],
            body=obj,
        )

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.request("GET", object_path(kind, namespace or self.namespace, name))
        except ApiFailure as e:
            if e.status == 404:
                return None
            raise

    def list(
        self, kind: str, selector: str = "", namespace: str | None = None
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        doc = self.request("GET", object_path(kind, namespace or self.namespace), query=query)
        return list(doc.get("items") or [])

    def delete(self, kind: str, name: str, *, propagation: str = "Foreground") -> bool:
        """Delete one object and (by default) everything it owns; False if absent."""
        try:
            self.request(
                "DELETE",
                object_path(kind, self.namespace, name),
                body={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "propagationPolicy": propagation,
                },
            )
        except ApiFailure as e:
            if e.status == 404:
                return False
            raise
        return True

    def server_version(self) -> tuple[int, int, str]:
        doc = self.request("GET", "/version")
        git = str(doc.get("gitVersion") or "")
        major = int("".join(c for c in str(doc.get("major", "0")) if c.isdigit()) or 0)
        minor = int("".join(c for c in str(doc.get("minor", "0")) if c.isdigit()) or 0)
        return major, minor, git

    # -- exec --------------------------------------------------------------

    def open_exec(self, pod: str, container: str, argv: Sequence[str], *, tty: bool) -> Any:
        """A websocket exec session (``WSClient``), stdin/stdout/stderr open."""
        from kubernetes.client import ApiClient, CoreV1Api
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        # stream() swaps call_api on the client it is given while it
        # connects: on the shared client, a REST call (the Lease renewer) or
        # another exec (the queue mirror) from another thread would go over
        # a websocket, or restore the wrong one. A client per exec, same
        # configuration (server, CA, credentials).
        own = ApiClient(self.api_client.configuration)
        try:
            return stream(
                CoreV1Api(own).connect_get_namespaced_pod_exec,
                pod,
                self.namespace,
                command=list(argv),
                container=container,
                stdin=True,
                stdout=True,
                stderr=not tty,
                tty=tty,
                _preload_content=False,
                binary=True,
            )
        except ApiException as e:
            raise KubeError(
                f"cannot exec in pod {pod}: {e.reason}",
                hint="the pod may be gone; `bot-bottle list active` shows what runs",
            ) from None

    def exec(
        self,
        pod: str,
        container: str,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 600.0,
    ) -> ExecResult:
        """Run ``argv`` in ``container`` and wait; the exit code comes from the
        error channel's ``Status`` (``details.causes[ExitCode]``)."""
        ws = self.open_exec(pod, container, argv, tty=False)
        try:
            return collect(ws, stdin=stdin, timeout=timeout)
        finally:
            ws.close()


def collect(ws: Any, *, stdin: bytes | None, timeout: float) -> ExecResult:
    """Feed ``stdin``, gather stdout/stderr until the server closes, read the code."""
    if stdin:
        for i in range(0, len(stdin), 64 * 1024):
            ws.write_stdin(stdin[i : i + 64 * 1024])
    # v5 can say "stdin is done"; v4 cannot (callers size their stdin instead).
    ws.close_channel(0)
    out, err = b"", b""
    deadline = time.monotonic() + timeout
    while ws.is_open():
        if time.monotonic() > deadline:
            raise KubeError(f"exec did not finish within {timeout:.0f}s")
        ws.update(timeout=1)
        out += ws.read_stdout(timeout=0) or b""
        err += ws.read_stderr(timeout=0) or b""
    out += ws.read_stdout(timeout=0) or b""
    err += ws.read_stderr(timeout=0) or b""
    return ExecResult(exit_code=exit_code(ws.read_channel(3)), stdout=out, stderr=err)


def exit_code(error_channel: bytes | str) -> int:
    """The exit code in the exec error channel's ``Status``.

    Success -> 0; ``NonZeroExitCode`` -> its ``ExitCode`` cause. Anything
    else (no status: the connection dropped; another failure: the container
    is gone) raises, so a broken exec never reads as a clean exit.
    """
    raw = error_channel.decode() if isinstance(error_channel, bytes) else error_channel
    if not raw:
        raise KubeError(
            "exec ended without an exit status (the connection to the pod was lost)",
            hint="the pod may have been deleted or its node lost",
        )
    try:
        status = json.loads(raw)
    except ValueError:
        raise KubeError(f"exec returned an unreadable status: {raw[:200]!r}") from None
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message"))
                except (TypeError, ValueError):
                    break
    raise KubeError(f"exec failed: {status.get('message') or raw[:200]}")


def wait_for_pods(
    kube: Kube,
    names: Sequence[str],
    *,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, dict[str, Any]]:
    """Poll until every pod is Running and Ready; raise when one fails or time runs out."""
    deadline = clock() + timeout
    pending = list(names)
    ready: dict[str, dict[str, Any]] = {}
    while True:
        for name in list(pending):
            pod = kube.get("Pod", name)
            if pod is None:
                raise KubeError(f"pod {name} disappeared while starting")
            status = pod.get("status") or {}
            phase = status.get("phase")
            if phase in ("Failed", "Succeeded"):
                raise KubeError(
                    f"pod {name} ended while starting (phase {phase}): "
                    f"{status.get('message') or status.get('reason') or 'no reason given'}",
                    hint="`kubectl describe pod` shows the events (image pull, admission)",
                )
            conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            if phase == "Running" and conditions.get("Ready") == "True":
                ready[name] = pod
                pending.remove(name)
        if not pending:
            return ready
        if clock() > deadline:
            raise KubeError(
                f"pods not ready after {timeout:.0f}s: {', '.join(pending)}",
                hint="the nodes may still be pulling the images, or cannot schedule the pods",
            )
        sleep(1.0)
