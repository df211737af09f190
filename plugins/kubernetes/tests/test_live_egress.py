"""Live egress route changes for a cluster bottle, over ``pods/exec`` into the bundle pod.

Kubernetes 1.33 (the fake API server's schemas), driven by the real
``kubernetes`` client through ``KubernetesBackend.launch`` and
``egress_control``. The bundle pod's egress daemon is a REAL one
(``python -m bot_bottle_sidecars.egress``, mitmproxy) on this machine, whose
config file is the pod's :data:`~bot_bottle_kubernetes.egress_live.LIVE_CONFIG`
in the scripted pod's directory; its upstream is a local HTTPS server. The
bundle's exec shell understands the commands the control sends: ``head -c``
of the config, the tar copy-in and ``mv`` (the kit's pod shell), ``kill
-HUP 1`` (init forwarding SIGHUP: here sent to the daemon), the
introspection request (made to the daemon as the bundle makes it: no proxy,
Host the introspection name) and ``tail -c`` of egress's log (the daemon's
own lines). Anything else answers 127.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bot_bottle_sidecars.launch.ca import BottleCA, generate_bottle_ca
from bot_bottle_sidecars.layout import PY
from bot_bottle_testkit.egress import (
    EgressProcess,
    LocalUpstream,
    make_test_pki,
    start_egress,
)
from fake_apiserver import ExecSession, FakeApiServer
from k8s_cluster_kit import PodShell, bottle_objects, mini_plan

from bot_bottle import audit
from bot_bottle.cli import main
from bot_bottle.contracts.supervise import (
    EgressRoutePayload,
    ProposalStatus,
    SuperviseQueue,
    default_queue_dir,
)
from bot_bottle.egress.config import EgressConfig, EgressConfigError
from bot_bottle.egress.render import RouteSpec, render_egress_config
from bot_bottle.errors import BotBottleError
from bot_bottle.plugins import PluginHost
from bot_bottle.supervision import live_egress
from bot_bottle.supervision.live_egress import EgressReloadError
from bot_bottle_kubernetes import egress_live, operator_sync
from bot_bottle_kubernetes.backend import KubernetesBackend
from bot_bottle_kubernetes.egress_live import FETCH, LIVE_CONFIG, KubeEgressControl

SLUG = "shell-0a1b2c"
BUNDLE = f"bb-{SLUG}-sidecars"
NAMES = ["base.upstream.test", "new.upstream.test"]


@dataclass
class BundleEgress:
    """The bundle pod's egress side: the real daemon and what it serves."""

    pod_shell: PodShell
    upstream: LocalUpstream
    upstream_ca: Path
    ca: BottleCA | None = None
    daemon: EgressProcess | None = None

    @property
    def config_file(self) -> Path:
        return self.pod_shell.root / BUNDLE / LIVE_CONFIG.lstrip("/")

    def start(self, fake: FakeApiServer, tmp: Path) -> None:
        """What the bundle pod does when it starts: the ``egress-config`` init
        container copies the launch's config (the etc ConfigMap's item)
        into the writable directory; init starts egress on it."""
        (etc,) = [o for o in fake.all("ConfigMap") if o["metadata"]["name"].endswith("-etc")]
        pod = fake.get("Pod", "bot-bottle", BUNDLE)
        assert pod is not None
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "etc")
        key = next(
            i["key"] for i in volume["configMap"]["items"] if i["path"] == "egress/egress.json"
        )
        init = json.loads(
            etc["data"][
                next(
                    i["key"] for i in volume["configMap"]["items"] if i["path"] == "init-plan.json"
                )
            ]
        )
        egress = next(d for d in init["daemons"] if d["name"] == "egress")
        assert egress["argv"][egress["argv"].index("--config") + 1] == LIVE_CONFIG
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(etc["data"][key])
        self.ca = generate_bottle_ca(tmp / "bundle-ca")
        self.daemon = start_egress(self.config_file, self.ca.confdir)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    def fetch(self, host: str) -> int:
        """GET https://host/ through the daemon, as the agent sends it."""
        assert self.daemon is not None and self.ca is not None
        ctx = ssl.create_default_context(cafile=str(self.ca.agent_cert))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"https": self.daemon.proxy_url}),
            urllib.request.HTTPSHandler(context=ctx),
        )
        try:
            url = f"https://{host}:{self.upstream.https_port}/"
            with opener.open(url, timeout=20) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def __call__(self, session: ExecSession) -> int:
        argv = list(session.argv)
        if session.pod != BUNDLE or self.daemon is None:
            return self.pod_shell(session)
        if argv[:2] == ["head", "-c"] and argv[3:] == ["--", LIVE_CONFIG]:
            self.pod_shell.calls.append(argv)
            if not self.config_file.is_file():
                session.stderr(f"head: cannot open '{LIVE_CONFIG}'\n".encode())
                return 1
            session.stdout(self.config_file.read_bytes()[: int(argv[2])])
            return 0
        if argv == ["sh", "-c", "kill -HUP 1"]:
            self.pod_shell.calls.append(argv)
            if self.daemon.proc.poll() is not None:
                return 0  # init is alive; the dead daemon just does not reload
            self.daemon.reload()
            return 0
        if argv[:3] == [PY, "-c", FETCH]:
            self.pod_shell.calls.append(argv)
            return self._introspect(session, argv[3])
        if argv[:2] == ["tail", "-c"] and argv[3:] == ["--", egress_live.EGRESS_LOG]:
            self.pod_shell.calls.append(argv)
            data = "".join(f"{line}\n" for line in self.daemon.lines).encode()
            session.stdout(data[-int(argv[2]) :])
            return 0
        return self.pod_shell(session)

    def _introspect(self, session: ExecSession, url: str) -> int:
        """The bundle's request: no proxy, to the introspection name pinned to
        egress's loopback address (here: the daemon's port on 127.0.0.1)."""
        assert self.daemon is not None
        parsed = urllib.parse.urlsplit(url)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.daemon.port}{parsed.path}", headers={"Host": parsed.netloc}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=5) as resp:
                session.stdout(resp.read())
            return 0
        except OSError as exc:
            session.stderr(f"Traceback ...\n{type(exc).__name__}: {exc}\n".encode())
            return 1


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalUpstream, Path]]:
    tmp = tmp_path_factory.mktemp("k8s-live-upstream")
    pki = make_test_pki(tmp / "pki", NAMES)
    (tmp / "git").mkdir()
    up = LocalUpstream(pki, tmp / "git").start()
    try:
        yield up, pki.ca_cert
    finally:
        up.stop()


@pytest.fixture
def bundle(
    kube_env: FakeApiServer,
    shell: PodShell,
    upstream: tuple[LocalUpstream, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BundleEgress]:
    monkeypatch.setattr(operator_sync, "INTERVAL", 0.2)
    up, ca = upstream
    side = BundleEgress(shell, up, ca)
    kube_env.exec_handler = side
    try:
        yield side
    finally:
        side.stop()


def _plan(bundle: BundleEgress) -> Any:
    config, _ = render_egress_config(
        [RouteSpec("base.upstream.test", ports=(bundle.upstream.https_port,))],
        upstream_ca=str(bundle.upstream_ca),
        extra_hosts=dict.fromkeys(NAMES, "127.0.0.1"),
        log_level="full",
    )
    return mini_plan(egress_config=config, supervise=True)


def _hosts(control: Any) -> list[str]:
    return sorted(r["host"] for r in control.live_routes()["routes"])


def test_allow_and_deny_reach_the_bundle_pods_egress_without_restart(
    kube_env: FakeApiServer, bundle: BundleEgress, tmp_path: Path
) -> None:
    backend = KubernetesBackend(progress=lambda _m: None)
    assert backend.egress_control(SLUG) is None  # not running yet
    with backend.launch(backend.prepare(_plan(bundle))):
        bundle.start(kube_env, tmp_path)
        assert bundle.daemon is not None
        pid = bundle.daemon.proc.pid
        control = backend.egress_control(SLUG)
        assert isinstance(control, KubeEgressControl)
        assert bundle.fetch("new.upstream.test") == 403
        change = live_egress.allow(
            control,
            {"host": "new.upstream.test", "ports": [bundle.upstream.https_port]},
            plugins=PluginHost().load(),
            comment="needed for the build",
        )
        assert change.before is None
        assert _hosts(control) == ["base.upstream.test", "new.upstream.test"]
        assert bundle.fetch("new.upstream.test") == 200
        # The file in the pod says the same, readable by the daemon's user,
        # and no temporary is left; the same daemon process took it.
        assert EgressConfig.load(bundle.config_file).route_for("new.upstream.test")
        assert bundle.config_file.stat().st_mode & 0o777 == 0o644
        assert sorted(p.name for p in bundle.config_file.parent.iterdir()) == ["egress.json"]
        assert bundle.daemon.proc.pid == pid
        live_egress.deny(control, "base.upstream.test", comment="done")
        assert _hosts(control) == ["new.upstream.test"]
        assert bundle.fetch("base.upstream.test") == 403
        # Every exec went to the bundle pod, never the agent's.
        bundle_calls = [
            s for s in kube_env.exec_log if s.argv[:1] == ["sh"] and "kill" in s.argv[2]
        ]
        assert bundle_calls and {s.pod for s in bundle_calls} == {BUNDLE}
    actions = [(e["action"], e["route"]) for e in audit.read()]
    assert actions == [("egress.allow", "new.upstream.test"), ("egress.deny", "base.upstream.test")]
    (allowed,) = [e for e in audit.read() if e["action"] == "egress.allow"]
    assert allowed["bottle"] == SLUG and allowed["comment"] == "needed for the build"
    assert bottle_objects(kube_env) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"host": "10.1.2.3"}, "IP address"),
        ({"host": "new.upstream.test", "bogus": 1}, "bogus"),
        (
            {"host": "new.upstream.test", "auth": {"scheme": "Bearer", "token_ref": "TOK"}},
            "cannot carry a credential",
        ),
    ],
)
def test_an_invalid_route_is_refused_before_the_pod_is_touched(
    kube_env: FakeApiServer,
    bundle: BundleEgress,
    tmp_path: Path,
    spec: dict[str, Any],
    message: str,
) -> None:
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(_plan(bundle))):
        bundle.start(kube_env, tmp_path)
        control = backend.egress_control(SLUG)
        assert control is not None
        before = bundle.config_file.read_bytes()
        with pytest.raises(EgressConfigError) as err:
            live_egress.allow(control, spec, plugins=PluginHost().load())
        assert message in err.value.message + str(err.value.hint)
        assert bundle.config_file.read_bytes() == before
        assert _hosts(control) == ["base.upstream.test"]
        assert not any(c[:3] == ["sh", "-c", "kill -HUP 1"] for c in bundle.pod_shell.calls)
    assert list(audit.read()) == []


def test_a_config_the_daemon_refuses_is_reported_and_the_pods_old_file_restored(
    kube_env: FakeApiServer, bundle: BundleEgress, tmp_path: Path
) -> None:
    """Valid on the host, refused by the daemon in the pod (a DLP detector it
    does not have): the daemon's reason comes back from its log in the pod,
    the old file is put back there, the old table stays enforced."""
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(_plan(bundle))):
        bundle.start(kube_env, tmp_path)
        control = backend.egress_control(SLUG)
        assert control is not None
        before = bundle.config_file.read_bytes()
        data = json.loads(EgressConfig.parse(before).dump_json())
        data["routes"].append(
            {"host": "new.upstream.test", "dlp": {"outbound_detectors": ["no-such-detector"]}}
        )
        with pytest.raises(EgressReloadError) as err:
            live_egress.apply_config(control, EgressConfig.model_validate(data), timeout=10)
        assert "no-such-detector" in err.value.message
        assert "keeps its previous routes" in err.value.message
        assert bundle.config_file.read_bytes() == before
        assert _hosts(control) == ["base.upstream.test"]
        assert bundle.fetch("base.upstream.test") == 200


def test_a_bundle_that_stopped_answering_fails_the_change_and_audits_it(
    kube_env: FakeApiServer, bundle: BundleEgress, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_egress, "RELOAD_TIMEOUT", 2.0)
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(_plan(bundle))):
        bundle.start(kube_env, tmp_path)
        control = backend.egress_control(SLUG)
        assert control is not None
        assert bundle.daemon is not None
        bundle.daemon.stop()
        with pytest.raises(EgressReloadError) as err:
            live_egress.allow(control, {"host": "new.upstream.test"}, plugins=PluginHost().load())
        assert "cannot read the live egress table" in err.value.message
    assert [e["action"] for e in audit.read()] == ["egress.allow", "egress.allow.failed"]


def test_an_unreadable_log_during_the_reload_neither_fails_nor_strands_the_change(
    kube_env: FakeApiServer, bundle: BundleEgress, tmp_path: Path
) -> None:
    """Egress's log in the pod cannot be read (init not yet writing it, or
    rotating it) while the daemon is still reloading: the change is judged
    by the table read back, as when the log reads. It used to end there with
    an error and the audit's ``.failed``, the new file left in the pod, which
    the daemon then enforced (or the next change carried along)."""
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(_plan(bundle))):
        bundle.start(kube_env, tmp_path)
        control = backend.egress_control(SLUG)
        assert control is not None
        busy = {"fetches": 1}

        def shell(session: ExecSession) -> int:
            argv = list(session.argv)
            if argv[:2] == ["tail", "-c"]:
                session.stderr(f"tail: cannot open '{egress_live.EGRESS_LOG}'\n".encode())
                return 1
            if argv[:3] == [PY, "-c", FETCH] and busy["fetches"] > 0:
                busy["fetches"] -= 1  # the daemon restarting its listener
                session.stderr(b"ConnectionRefusedError: [Errno 111] Connection refused\n")
                return 1
            return bundle(session)

        kube_env.exec_handler = shell
        live_egress.allow(
            control,
            {"host": "new.upstream.test", "ports": [bundle.upstream.https_port]},
            plugins=PluginHost().load(),
        )
        assert _hosts(control) == ["base.upstream.test", "new.upstream.test"]
        assert bundle.fetch("new.upstream.test") == 200
    assert [e["action"] for e in audit.read()] == ["egress.allow"]


def test_a_reload_signal_that_fails_puts_the_old_file_back(
    kube_env: FakeApiServer, bundle: BundleEgress, tmp_path: Path
) -> None:
    """The exec that signals init fails (the API server dropped it): the
    change fails and is audited as failed, and the pod's file is the old one
    again, so no later reload or change picks the refused route up."""
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(_plan(bundle))):
        bundle.start(kube_env, tmp_path)
        control = backend.egress_control(SLUG)
        assert control is not None
        before = bundle.config_file.read_bytes()
        dropped = {"signals": 1}

        def shell(session: ExecSession) -> int:
            if list(session.argv) == ["sh", "-c", "kill -HUP 1"] and dropped["signals"] > 0:
                dropped["signals"] -= 1
                session.stderr(b"error: unable to upgrade connection\n")
                return 1
            return bundle(session)

        kube_env.exec_handler = shell
        with pytest.raises(EgressReloadError) as err:
            live_egress.allow(control, {"host": "new.upstream.test"}, plugins=PluginHost().load())
        assert "cannot signal the sidecars" in err.value.message
        assert bundle.config_file.read_bytes() == before
        assert _hosts(control) == ["base.upstream.test"]
    assert [e["action"] for e in audit.read()] == ["egress.allow", "egress.allow.failed"]


def test_the_cli_and_a_proposal_approval_change_a_cluster_bottles_routes(
    kube_env: FakeApiServer,
    bundle: BundleEgress,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The operator's unchanged commands: ``egress routes/allow`` and
    ``proposals approve`` of the agent's egress request find the cluster
    bottle through ``egress_control`` and change its live table."""
    from bot_bottle_sidecars.layout import QUEUE_DIR

    pod_queue_dir = bundle.pod_shell.root / BUNDLE / QUEUE_DIR.lstrip("/")
    pod_queue_dir.mkdir(parents=True)
    pod_queue = SuperviseQueue(pod_queue_dir, SLUG)
    host_queue = SuperviseQueue(default_queue_dir(SLUG), SLUG)
    backend = KubernetesBackend(progress=lambda _m: None)
    port = bundle.upstream.https_port
    with backend.launch(backend.prepare(_plan(bundle))):
        bundle.start(kube_env, tmp_path)
        capsys.readouterr()
        assert main(["egress", "routes", SLUG, "--json"]) == 0
        routes = json.loads(capsys.readouterr().out)["routes"]
        assert [r["host"] for r in routes] == ["base.upstream.test"]
        proposal = pod_queue.submit(
            EgressRoutePayload(host="new.upstream.test", justification="docs")
        )
        _wait(lambda: proposal.id in host_queue.proposal_ids())
        assert main(["proposals", "approve", proposal.id, "--comment", "ok"]) == 0
        control = backend.egress_control(SLUG)
        assert control is not None
        assert _hosts(control) == ["base.upstream.test", "new.upstream.test"]
        _wait(lambda: pod_queue.state(proposal.id).status is ProposalStatus.APPROVED)
        # The agent asked for 443; the operator widens it to the test's port.
        assert main(["egress", "allow", SLUG, "new.upstream.test", "--port", str(port)]) == 0
        assert bundle.fetch("new.upstream.test") == 200
        assert main(["egress", "deny", SLUG, "new.upstream.test"]) == 0
        assert bundle.fetch("new.upstream.test") == 403
    actions = [(e["action"], e.get("proposal")) for e in audit.read() if "egress" in e["action"]]
    assert actions == [
        ("egress.allow", proposal.id),
        ("egress.allow", None),
        ("egress.deny", None),
    ]


def test_an_unreadable_config_is_a_clear_error(
    kube_env: FakeApiServer, bundle: BundleEgress
) -> None:
    """The pod answers no file (a bundle rendered before live routes): an
    ``error:`` that says where, no traceback, nothing written."""
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(_plan(bundle))):
        control = backend.egress_control(SLUG)
        assert control is not None
        with pytest.raises(BotBottleError) as err:
            live_egress.allow(control, {"host": "new.upstream.test"}, plugins=PluginHost().load())
        assert "cannot read the egress config of bottle" in err.value.message
        assert "command not found" in err.value.message or "No such" in err.value.message
    assert list(audit.read()) == []


def _wait(check: Any, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")
