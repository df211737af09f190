"""The egress daemon: mitmproxy's DumpMaster run in-process with the egress addon.

Started by the bundle's init as
``python -m bot_bottle_sidecars.egress --config PATH --confdir DIR --listen-port N``.
SIGHUP reloads the config; SIGTERM/SIGINT stop the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bot_bottle.egress.config import EgressConfig, EgressConfigError
from bot_bottle.errors import BotBottleError
from bot_bottle.secrets import Secret
from bot_bottle_sidecars.egress.dlp import DetectorScanner, TrafficScanner
from bot_bottle_sidecars.egress.eventlog import EventLog, Redactor, route_stdlib_logging
from bot_bottle_sidecars.launch.ca import CA_KEY_AND_CERT

#: Where Debian/Ubuntu, Fedora/RHEL and Alpine keep the system bundle.
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


def system_ca_bundle() -> Path | None:
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, *_SYSTEM_BUNDLES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build_trust_bundle(runtime: Path, upstream_ca: str | None) -> Path:
    """System bundle + the bottle's upstream CA in one file.

    ``ssl_verify_upstream_trusted_ca`` *replaces* mitmproxy's default store, so
    an added CA must be concatenated with the system bundle, never used alone
    (alone, every public upstream would fail verification). Without a system
    bundle, certifi's is used.
    Returns a staged file in ``runtime``; :class:`UpstreamTrust` puts it in place.
    """
    system = system_ca_bundle()
    if system is None:
        import certifi

        system = Path(certifi.where())
    data = system.read_bytes()
    if upstream_ca:
        try:
            extra = Path(upstream_ca).read_bytes()
        except OSError as exc:
            raise EgressConfigError(
                f"upstream_ca {upstream_ca}: {exc.strerror}",
                hint="mount the CA file into the sidecar or drop upstream_ca",
            ) from None
        if b"-----BEGIN CERTIFICATE-----" not in extra:
            raise EgressConfigError(
                f"upstream_ca {upstream_ca} holds no PEM certificate",
                hint="give a PEM file (-----BEGIN CERTIFICATE-----)",
            )
        data = data.rstrip(b"\n") + b"\n" + extra
    staged = runtime / ".upstream-trust.pem.new"
    staged.write_bytes(data)
    return staged


class UpstreamTrust:
    """The upstream trust bundle, rebuilt when a reload changes ``upstream_ca``.

    mitmproxy caches its upstream TLS context by the bundle's *path*, so each
    generation gets a new file name and the option is pointed at it.
    """

    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.path: Path | None = None
        self.options: Any = None  # mitmproxy's options, once the master exists
        self._generation = 0

    def prepare(self, config: EgressConfig) -> Callable[[], None]:
        staged = build_trust_bundle(self.runtime, config.upstream_ca)
        return lambda: self._commit(staged)

    def _commit(self, staged: Path) -> None:
        self._generation += 1
        final = self.runtime / f"upstream-trust-{self._generation}.pem"
        staged.replace(final)
        previous, self.path = self.path, final
        if self.options is not None:
            self.options.update(ssl_verify_upstream_trusted_ca=str(final))
        if previous is not None:
            previous.unlink(missing_ok=True)


def prepare_confdir(confdir: Path, runtime: Path) -> Path:
    """mitmproxy's confdir: a private copy of the bottle CA.

    mitmproxy mints a *new* CA when it finds none (nobody would trust it), and
    writes a dhparam file next to the CA; copying into a private runtime dir
    keeps the mounted directory read-only and the key mode 0600 whatever uid
    copied it in (``docker cp`` keeps the source's uid and mode).
    """
    src = confdir / CA_KEY_AND_CERT
    if not src.is_file():
        raise EgressConfigError(
            f"no {CA_KEY_AND_CERT} in {confdir}",
            hint="generate the bottle CA into it (bot_bottle_sidecars.launch.ca)",
        )
    dst = runtime / CA_KEY_AND_CERT
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(src.read_bytes())
    return runtime


def plugin_scanner_factory() -> Callable[[EgressConfig, tuple[Secret, ...]], TrafficScanner | None]:
    """DLP through the installed detector plugins; the plugin host is loaded only
    when some route selects a detector."""
    host: Any = None

    def factory(config: EgressConfig, secrets: tuple[Secret, ...]) -> TrafficScanner | None:
        nonlocal host
        names: set[str] = set()
        for r in config.routes:
            for sel in (r.dlp.outbound_detectors, r.dlp.inbound_detectors):
                if sel is not False:
                    names.update(sel)
        if not names:
            return None
        if host is None:
            from bot_bottle.plugins import PluginHost

            host = PluginHost().load()
        for name in sorted(names):
            host.component("dlp_detectors", name)  # unknown name -> a config error now
        from bot_bottle.dlp.pipeline import use_accelerator

        use_accelerator(host)  # the native run finder, when the image has it
        scanner = DetectorScanner(lambda n: host.create("dlp_detectors", n), secrets)
        scanner.preload(sorted(names))
        # The token rules' Hyperscan database compiles lazily (after 2 MiB
        # scanned, ~0.4 s): a long-running egress compiles it now, in the
        # background, instead of stalling a request later.
        from bot_bottle.dlp import prefilter

        prefilter.warm()
        return scanner

    return factory


def _connectable(address: str) -> bool:
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved
    )


def install_pinned_resolver(
    loop: asyncio.AbstractEventLoop, pins: Callable[[], Mapping[str, str]]
) -> None:
    """Resolve names in the config's ``extra_hosts`` to their pinned address.

    mitmproxy connects with ``asyncio.open_connection(host, port)``, which
    resolves through ``loop.getaddrinfo``; pinning there keeps the host *name*
    on the connection (TLS SNI, certificate check and connection reuse stay
    name-based) without touching /etc/hosts.

    Names the pins do not cover resolve through DNS, and the answers are
    filtered: loopback, link-local (cloud metadata at 169.254.169.254),
    unspecified, multicast and reserved addresses are never connected to, so
    an allowed name whose DNS someone else controls cannot point egress at
    the bundle's own daemons or the host's metadata service. A pin (the
    operator's explicit choice) may name any address.
    """
    original = loop.getaddrinfo

    async def getaddrinfo(
        host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        pinned = pins().get(name.rstrip(".").lower()) if isinstance(name, str) else None
        infos = await original(
            pinned or host, port, family=family, type=type, proto=proto, flags=flags
        )
        if pinned:
            return infos
        usable = [i for i in infos if _connectable(str(i[4][0]))]
        if not usable:
            raise OSError(
                f"{name} resolves only to loopback, link-local or reserved addresses, which "
                "egress does not connect to (pin it in the bottle's extra_hosts if intended)"
            )
        return usable

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]


def skip_default_addons() -> None:
    """Let ``mitmproxy.addons.<name>`` import without the package's
    ``__init__``, which imports all ~30 default addons (and with them flask,
    werkzeug, ldap3, the onboarding app): ~15 MiB of every bottle's egress
    and a third of its import time, for addons this proxy never adds.

    The package is registered as an empty namespace over its own directory,
    so each submodule still loads from mitmproxy's files as usual. Nothing
    here calls ``mitmproxy.addons.default_addons``; a process that already
    imported the package (tests) keeps it as it is.
    """
    if "mitmproxy.addons" in sys.modules:
        return
    import importlib.machinery
    import importlib.util

    import mitmproxy

    found = importlib.util.find_spec("mitmproxy.addons")
    if found is None or not found.submodule_search_locations:
        return
    spec = importlib.machinery.ModuleSpec("mitmproxy.addons", None, is_package=True)
    module = importlib.util.module_from_spec(spec)
    module.__path__ = list(found.submodule_search_locations)
    sys.modules["mitmproxy.addons"] = module
    mitmproxy.addons = module  # type: ignore[attr-defined]


async def serve(
    config: EgressConfig,
    config_path: Path,
    confdir: Path,
    listen_host: str,
    listen_port: int,
    log: EventLog,
) -> int:
    # mitmproxy is imported only once the config is known to be good: a bad
    # file is reported in a fraction of the start-up time.
    skip_default_addons()
    from mitmproxy import master as mitm_master
    from mitmproxy import options
    from mitmproxy.addons import core, disable_h2c, next_layer, proxyserver, tlsconfig

    from bot_bottle_sidecars.egress import dispatch, hotpath, streams, tuning
    from bot_bottle_sidecars.egress.addon import EgressAddon

    # Early answers, capped buffered bodies, per-stream resets (see streams.py).
    streams.install()
    # Reads of up to 256 KiB instead of 64 KiB: a third less CPU per GiB (tuning.py).
    tuning.install()
    # Hook dispatch without mitmproxy's repeated look-ups (dispatch.py).
    dispatch.install()
    # Header look-ups and option reads without mitmproxy's detours (hotpath.py).
    hotpath.install()
    runtime = Path(tempfile.mkdtemp(prefix="bot-bottle-egress-"))
    try:
        prepare_confdir(confdir, runtime)
        trust = UpstreamTrust(runtime)
        addon = EgressAddon(
            config, log, scanner_factory=plugin_scanner_factory(), trust=trust.prepare
        )
        assert trust.path is not None
        opts = options.Options(listen_host=listen_host, listen_port=listen_port)
        # Only the addons a forward proxy needs. DumpMaster's defaults add ~30
        # more (onboarding app on mitm.it, map-local/remote, replay, flow
        # saving...): every hook is dispatched to each of them, which cost ~1 ms
        # per request here, and each is surface an agent could poke at.
        master = mitm_master.Master(opts, with_termlog=False)
        master.addons.add(
            core.Core(),
            proxyserver.Proxyserver(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            disable_h2c.DisableH2C(),
        )
        route_stdlib_logging(log)
        master.options.update(
            confdir=str(runtime),
            # Lazy: never open an upstream connection before a request was judged.
            connection_strategy="lazy",
            ssl_verify_upstream_trusted_ca=str(trust.path),
            ssl_insecure=False,
            rawtcp=False,
            websocket=True,
            http2=True,
        )
        trust.options = master.options
        master.addons.add(addon)
        loop = asyncio.get_running_loop()
        install_pinned_resolver(loop, addon.extra_hosts)
        loop.add_signal_handler(signal.SIGHUP, _reload_and_report, addon, config_path)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, master.shutdown)
        await master.run()
        return addon.exit_code
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def _reload_and_report(addon: Any, config_path: Path) -> None:
    """Reload, and tell init how it went (``BOT_BOTTLE_STATUS_FD``, a pipe
    init hands its reloading daemons) so the operator who asked sees a
    refused reload as an error, not only as a line in the bundle's log."""
    ok = addon.reload(config_path)
    fd = os.environ.get("BOT_BOTTLE_STATUS_FD", "")
    if not fd.isdigit():
        return
    line = json.dumps({"reload": {"ok": ok, "error": addon.reload_error}}) + "\n"
    # Init gone or not listening: the log line reload wrote still says it.
    with contextlib.suppress(OSError):
        os.write(int(fd), line.encode())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bot_bottle_sidecars.egress")
    p.add_argument("--config", type=Path, required=True, help="rendered egress config (JSON)")
    p.add_argument("--confdir", type=Path, required=True, help="directory holding the bottle CA")
    p.add_argument("--listen-host", default="0.0.0.0")  # noqa: S104 - the sidecar's own network
    p.add_argument("--listen-port", type=int, default=8080)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log = EventLog("off", Redactor())
    try:
        config = EgressConfig.load(args.config)
        return asyncio.run(
            serve(config, args.config, args.confdir, args.listen_host, args.listen_port, log)
        )
    except BotBottleError as exc:
        log.boot_failed(error=exc.message, hint=exc.hint)
        return 2
    except Exception as exc:
        # Never a traceback: one JSON line saying what failed.
        log.boot_failed(error=f"{type(exc).__name__}: {exc}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
