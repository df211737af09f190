"""A second, private Docker engine for faults that would hurt the shared one:
restarting an engine under running bottles, filling its disk.

It is a real ``dockerd`` with its own data root, exec root (so its own
containerd), pid file and socket, running in a network namespace of its own
(``ip netns add``): its bridge, its iptables rules and its address pools
are that namespace's, so it cannot touch the shared engine's. (Without the
namespace it could not be restarted safely: dockerd 20.10 started with a
``--default-address-pool`` deletes the interface named ``docker0`` whenever
it finds its own stale default network, i.e. on every restart, whatever
``--bridge`` says; that took the shared engine's bridge away once.)

The namespace reaches the outside (image builds fetch packages) through a
veth pair on a /24 no route on the machine uses, with one MASQUERADE and two
FORWARD rules on the host for that /24 only. bot-bottle is pointed at the
engine with ``DOCKER_HOST`` in a subprocess's environment; its Unix sockets
and bind mounts are files, which work across network namespaces.

Teardown (always, also after a failed test or a SIGKILLed engine): the
engine stopped, every process left in the namespace or naming the engine's
roots killed, mounts under its roots unmounted, the namespace (and with it
the veth pair), the host rules and the directories removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    nets = []
    for line in out.splitlines():
        words = line.split()
        if not words or words[0] == "default":
            continue
        word = words[1] if words[0] in ("broadcast", "local", "unreachable") else words[0]
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(word, False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def _free_link_net() -> ipaddress.IPv4Network:
    """A 10.x.255.0/24 no route on this machine overlaps."""
    used = _used_networks()
    choices = list(range(200, 250))
    random.shuffle(choices)
    for x in choices:
        net = ipaddress.IPv4Network(f"10.{x}.255.0/24")
        if not any(net.overlaps(n) for n in used):
            return net
    raise RuntimeError("no free 10.x.255.0/24 for the second engine")


class SecondEngine:
    def __init__(self, data_root: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bbe-", dir="/tmp"))  # short: socket paths
        self.data_root = data_root or self.root / "data"
        self.exec_root = self.root / "exec"
        self.sock = self.root / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.log_path = self.root / "dockerd.log"
        tag = self.root.name[4:]
        self.netns = f"bbe-{tag}"
        self.veth_host, self.veth_ns = f"bbeh{tag}"[:15], f"bben{tag}"[:15]
        self.link_net = _free_link_net()
        #: The host's address as the namespace (and the engine's containers,
        #: through its NAT) reach it.
        self.gateway = str(self.link_net.network_address + 1)
        self.proc: subprocess.Popen[bytes] | None = None
        self._host_rules: list[list[str]] = []

    # -- lifecycle -------------------------------------------------------------

    def create_netns(self) -> None:
        ns = ["ip", "netns", "exec", self.netns]
        inner = str(self.link_net.network_address + 2)
        for argv in (
            ["ip", "netns", "add", self.netns],
            ["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns],
            ["ip", "link", "set", self.veth_ns, "netns", self.netns],
            ["ip", "addr", "add", f"{self.gateway}/24", "dev", self.veth_host],
            ["ip", "link", "set", self.veth_host, "up"],
            [*ns, "ip", "link", "set", "lo", "up"],
            [*ns, "ip", "addr", "add", f"{inner}/24", "dev", self.veth_ns],
            [*ns, "ip", "link", "set", self.veth_ns, "up"],
            [*ns, "ip", "route", "add", "default", "via", self.gateway],
        ):
            subprocess.run(argv, check=True, capture_output=True)

    def start(self, timeout: float = 60) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_root.mkdir(parents=True, exist_ok=True)
        argv = [
            "nsenter", f"--net=/run/netns/{self.netns}",
            "dockerd",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--host={self.host}",
            f"--cgroup-parent=/{self.root.name}",
            "--storage-driver=overlay2",
            "--log-level=warn",
        ]  # fmt: skip
        log = self.log_path.open("ab")
        # Its own session: a Ctrl-C to pytest must not reach it mid-test, and
        # killing it hits only this process.
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.wait_up(timeout)

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            if self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"the second dockerd did not answer in {timeout} s: {self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """The engine dies (a crash: SIGKILL, or an orderly stop: SIGTERM)."""
        assert self.proc is not None
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        containerd = int(pidfile.read_text()) if pidfile.exists() else 0
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        # Its containerd follows it (parent-death signal), not at once: a
        # dockerd started before it is gone attaches to the dying one and
        # fails with "timeout waiting for containerd to start".
        deadline = time.monotonic() + 30
        while containerd and Path(f"/proc/{containerd}").exists():
            if time.monotonic() > deadline:
                os.kill(containerd, signal.SIGKILL)
            time.sleep(0.1)

    def stop(self) -> None:
        """Everything this engine ran or mounted gone; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self._our_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mnt in self._our_mounts():
            subprocess.run(["umount", "-l", mnt], capture_output=True)

    def teardown(self) -> None:
        try:
            self.stop()
        finally:
            for rule in reversed(self._host_rules):
                subprocess.run(["iptables", *rule], capture_output=True)
            self._host_rules.clear()
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            subprocess.run(["ip", "link", "del", self.veth_host], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)

    def _our_processes(self) -> list[int]:
        """Whatever runs in the namespace (containers, shims, containerd) and
        whatever names this engine's roots on its command line."""
        ns = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        found = {int(p) for p in ns.stdout.split() if p.isdigit()}
        needles = (str(self.exec_root).encode(), str(self.data_root).encode())
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if any(n in cmdline for n in needles):
                found.add(int(proc.name))
        found.discard(os.getpid())
        return sorted(found)

    def _our_mounts(self) -> list[str]:
        prefixes = (str(self.root) + "/", str(self.data_root) + "/")
        mounts = [
            line.split()[1].replace("\\040", " ")
            for line in Path("/proc/mounts").read_text().splitlines()
        ]
        return [m for m in reversed(mounts) if m.startswith(prefixes)]

    def nat(self) -> None:
        """The namespace's way out (image builds fetch packages): three host
        rules for its /24 only, inserted at the top, removed at teardown."""
        src = str(self.link_net)
        rules = [
            ("nat", "POSTROUTING", ["-s", src, "!", "-o", self.veth_host, "-j", "MASQUERADE"]),
            ("filter", "FORWARD", ["-i", self.veth_host, "-j", "ACCEPT"]),
            ("filter", "FORWARD", ["-o", self.veth_host, "-j", "ACCEPT"]),
        ]
        for table, chain, spec in rules:
            subprocess.run(["iptables", "-t", table, "-I", chain, *spec], check=True)
            self._host_rules.append(["-t", table, "-D", chain, *spec])

    # -- use -------------------------------------------------------------------

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(base if base is not None else os.environ), "DOCKER_HOST": self.host}

    def docker(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=self.env(), capture_output=True, text=True,
                              check=check, **kw)  # fmt: skip

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=60)

    def load(self, *refs: str) -> None:
        """``docker save`` from the shared engine into this one."""
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        save = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE, env=env)
        try:
            self.docker("load", "--quiet", stdin=save.stdout)
        finally:
            assert save.stdout is not None
            save.stdout.close()
            assert save.wait() == 0, f"docker save {refs} failed"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def second_engine(data_root: Path | None = None) -> Iterator[SecondEngine]:
    engine = SecondEngine(data_root)
    try:
        engine.create_netns()
        engine.start()
        yield engine
    finally:
        engine.teardown()


def bottle_images(home: Path, agent_name: str, host_env: dict[str, str]) -> list[str]:
    """The images ``run <agent_name>`` needs, built (or found) on the shared
    engine: the base, the agent's and the bundle's, by their content tags."""
    import pytest

    from bot_bottle.manifest.store import Manifest
    from bot_bottle.plan import make_plan
    from bot_bottle.plugins import PluginHost
    from bot_bottle_docker.images import ensure_agent_image, ensure_bundle_image

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DOCKER_HOST", raising=False)
        mp.setenv("BOT_BOTTLE_HOME", str(home))
        if "BOT_BOTTLE_BUILD_CA_BUNDLE" in host_env:
            mp.setenv("BOT_BOTTLE_BUILD_CA_BUNDLE", host_env["BOT_BOTTLE_BUILD_CA_BUNDLE"])
        host = PluginHost().load()
        agent = Manifest(home=home, host=host).agent(agent_name)
        provider = host.create("agent_providers", agent.bottle.agent_provider.template)

        def ask(name: str) -> str:
            raise AssertionError(f"unexpected prompt for {name}")

        plan = make_plan(agent, provider, backend="docker", host=host, host_env=host_env, ask=ask)
        spec = plan.agent_image_spec
        return [spec.base_image, ensure_agent_image(spec).tag, ensure_bundle_image().tag]
