"""The git hooks of the gate, run as ``python -m bot_bottle_sidecars.gitgate.hooks``.

``access`` is git daemon's ``--access-hook``: before every upload-pack
(clone, fetch, pull, ls-remote) it refreshes the mirror from the upstream and
fixes HEAD; when the upstream cannot be reached it fails the request (never
serves stale data silently) with a one-line reason git daemon sends to the
client. Before receive-pack it contacts nothing: a push with a secret in it
must be refused before the upstream sees so much as a connection.

``pre-receive`` scans what a push brings and forwards clean pushes upstream;
see :func:`pre_receive`.

Both log JSON lines to ``<base>/.gate/hooks.log`` (the daemon relays them to
its own log): pre-receive's stderr goes to the agent, and git daemon discards
the access hook's, so neither would reach the gate's log otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from bot_bottle.contracts.dlp import Finding
from bot_bottle.errors import BotBottleError
from bot_bottle.gitgate import allow
from bot_bottle.gitgate.plan import KNOWN_SECRET_PREFIX
from bot_bottle.log import configure_logging, get_logger
from bot_bottle.secrets import Secret
from bot_bottle_sidecars.gitgate import scan, upstream
from bot_bottle_sidecars.gitgate.layout import Layout
from bot_bottle_sidecars.gitgate.runtime import RepoRuntime, Runtime
from bot_bottle_sidecars.gitgate.upstream import RefUpdate, Upstream

PREFIX = "git-gate:"
_KNOWN_SECRET_RE = re.compile(rf"{KNOWN_SECRET_PREFIX}[0-9]+")
MAX_LISTED = 20


def _say(*lines: str, stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stderr
    for line in lines:
        out.write(f"{PREFIX} {line}\n")
    out.flush()


def _tell_client(text: str) -> None:
    # git daemon sends the first line of the access hook's stdout to the
    # client as the reason (with --informative-errors); stderr is for whoever
    # runs the hook by hand (git daemon discards it).
    line = text.replace("\n", " ") + "\n"
    for stream in (sys.stdout, sys.stderr):
        stream.write(line)
        stream.flush()


def _setup_logging(layout: Layout) -> Any:
    layout.state.mkdir(parents=True, exist_ok=True)
    stream = layout.hook_log.open("a", encoding="utf-8", buffering=1)
    configure_logging("json", stream=stream)
    return get_logger("bot_bottle_sidecars.gitgate", pid=os.getpid())


def upstream_for(repo: RepoRuntime, layout: Layout, config: Runtime) -> Upstream:
    return Upstream(
        url=repo.upstream,
        key_file=layout.key(repo.name),
        known_hosts=Path(repo.known_hosts),
        connect_timeout=config.connect_timeout,
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two clients fetching at once would race on the mirror's ref locks.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- access hook ---------------------------------------------------------------


def access(config: Runtime, layout: Layout, rest: Sequence[str]) -> int:
    """git daemon's access hook: ``<service> <path> <host> <canon host> <ip> <port>``.

    The first line on stdout is what the client sees when this fails.
    """
    log = _setup_logging(layout)
    if len(rest) < 2:
        _tell_client(f"{PREFIX} bad access-hook call")
        return 1
    service, path = rest[0], rest[1]
    repo = _repo_for_path(config, layout, path)
    if repo is None:
        log.warning("access to an undeclared path refused", service=service, path=path)
        _tell_client(f"{PREFIX} no such repository")
        return 1
    if service != "upload-pack":
        return 0
    up = upstream_for(repo, layout, config)
    mirror = layout.mirror(repo.name)
    with _locked(layout.lock(repo.name)):
        res, head = upstream.default_branch(up, mirror)
        if res.ok:
            res = upstream.fetch(up, mirror)
        if not res.ok:
            reason = res.reason()
            log.error(
                "upstream unreachable; request refused",
                repo=repo.name,
                upstream=repo.upstream,
                reason=reason,
                stderr=res.stderr.strip()[-2000:],
            )
            _tell_client(
                f"{PREFIX} cannot reach the upstream of {repo.name!r} ({repo.upstream}): "
                f"{reason}. Refusing to serve possibly stale data; try again later or ask "
                "the operator."
            )
            return 1
        if head and not upstream.set_head(mirror, head):
            log.warning("could not set HEAD", repo=repo.name, head=head)
    log.info("mirror refreshed", repo=repo.name, head=head or None)
    return 0


def _repo_for_path(config: Runtime, layout: Layout, path: str) -> RepoRuntime | None:
    try:
        wanted = Path(path).resolve()
    except (OSError, ValueError):
        return None
    for repo in config.repos.values():
        if layout.mirror(repo.name).resolve() == wanted:
            return repo
    return None


# -- pre-receive ----------------------------------------------------------------


def read_updates(stream: TextIO) -> list[RefUpdate]:
    updates: list[RefUpdate] = []
    for line in stream:
        parts = line.split()
        if len(parts) == 3:
            updates.append(RefUpdate(parts[0], parts[1], parts[2]))
    return updates


def _git(args: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", *args], capture_output=True, env=env, check=False, stdin=subprocess.DEVNULL
    )


def take_known_secrets(environ: MutableMapping[str, str]) -> tuple[Secret, ...]:
    """Remove the ``GITGATE_SECRET_<n>`` slots from ``environ``; return their
    values, in slot order (the bottle's secrets the scan must not let out)."""
    names = sorted(
        (k for k in environ if _KNOWN_SECRET_RE.fullmatch(k)),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    return tuple(Secret(environ.pop(k)) for k in names if environ.get(k))


def pre_receive(
    config: Runtime,
    layout: Layout,
    name: str,
    stdin: TextIO,
    *,
    known_secrets: Sequence[Secret] = (),
) -> int:
    """Scan, then forward. Exit 0 only when the upstream accepted every ref.

    Refusing here discards the pushed objects (they sit in git's quarantine
    until this hook succeeds), so the gate's refs never hold anything that was
    not scanned clean and accepted upstream.
    """
    log = _setup_logging(layout)
    repo = config.repos.get(name)
    if repo is None:
        _say(f"push rejected: no repo named {name!r} in this gate")
        return 1
    mirror = layout.mirror(name)
    # Replace refs (refs/replace/*, pushable like any ref) would let every git
    # command here see a stand-in for the object that really goes upstream.
    env = {**os.environ, "GIT_NO_REPLACE_OBJECTS": "1"}
    updates = read_updates(stdin)
    if not updates:
        return 0

    tips: list[str] = []
    tag_bodies: dict[str, bytes] = {}
    for u in updates:
        if u.is_delete:
            continue
        if _git(["rev-parse", "--verify", "--quiet", f"{u.new}^{{commit}}"], env).returncode:
            # The ref's name is not echoed: it has not been scanned yet.
            _say(f"push rejected: a pushed ref points at {u.new[:12]}, which is not a commit; "
                 "the gate forwards only commits and tags of commits.")  # fmt: skip
            return 1
        tips.append(u.new)
        # Every tag object of the chain (a tag of a tag of ...) goes upstream,
        # not just the outermost one. fsck bounds a chain to existing objects.
        obj = u.new
        while obj not in tag_bodies and _git(["cat-file", "-t", obj], env).stdout.strip() == b"tag":
            raw = _git(["cat-file", "tag", obj], env).stdout
            tag_bodies[obj] = raw.partition(b"\n\n")[2]
            obj = raw.partition(b"\n")[0].removeprefix(b"object ").strip().decode()

    started = time.monotonic()
    try:
        detectors = scan.load_detectors(_plugin_host(), config.detectors)
        if not detectors and scan.gitleaks_available() is None:
            raise scan.ScanError("no DLP detector is installed in the gate")
        report = scan.scan_push(
            mirror,
            tips,
            detectors,
            target=name,
            env=env,
            extra_messages=tag_bodies,
            ref_names=[u.ref for u in updates if not u.is_delete],
            known_secrets=known_secrets,
        )
        gitleaks = scan.gitleaks_available()
        if gitleaks and tips:
            report.findings.extend(scan.scan_gitleaks(gitleaks, mirror, tips, env))
    except (scan.ScanError, BotBottleError) as exc:
        log.error("scan failed; push refused", repo=name, reason=str(exc))
        _say(
            f"push rejected: the secret scan could not run ({exc}).",
            "Nothing was sent upstream. Ask the operator to check the git-gate log.",
        )
        return 1

    log.info(
        "push scanned",
        repo=name,
        refs=[u.ref for u in updates if u.ref not in report.hidden_names],
        commits=report.commits,
        bytes=report.bytes_scanned,
        findings=len(report.findings),
        detectors=[d.name for d in detectors],
        seconds=round(time.monotonic() - started, 3),
    )
    for f in report.warnings:
        _say(f"warning: {_describe(f, report.hidden_names)}")
    _apply_overrides(report, config, name, log)
    if report.blocking:
        return _reject(report, name, log)

    forwards: list[tuple[RefUpdate, bool]] = []
    for u in updates:
        force = False
        if not u.is_delete and not u.is_create:
            ancestor = _git(["merge-base", "--is-ancestor", u.old, u.new], env)
            # A non-descendant update the gate accepted must go up as a forced one:
            # a plain push of it is refused upstream as a non-fast-forward.
            force = ancestor.returncode != 0
        forwards.append((u, force))
    started = time.monotonic()
    result = upstream.push(upstream_for(repo, layout, config), forwards, env=env)
    if not result.ok:
        reason = result.reason()
        log.error(
            "upstream refused the push",
            repo=name,
            reason=reason,
            stderr=result.stderr.strip()[-2000:],
            porcelain=result.stdout.strip()[-2000:],
        )
        _say(f"the upstream ({repo.upstream}) did not accept the push: {reason}")
        for line in _rejected_lines(result.stdout):
            _say(f"  {line}")
        _say("Nothing changed on the gate; fetch and try again, or ask the operator.")
        return 1
    log.info(
        "push forwarded",
        repo=name,
        refs=[u.ref for u, _ in forwards],
        forced=[u.ref for u, force in forwards if force],
        seconds=round(time.monotonic() - started, 3),
    )
    _say(f"scanned {report.commits} new commit(s); forwarded to {repo.upstream}")
    return 0


def _plugin_host() -> Any:
    from bot_bottle.plugins import PluginHost

    return PluginHost().load()


def _apply_overrides(report: scan.Report, config: Runtime, repo: str, log: Any) -> None:
    """Drop the blocking findings the operator allowed (``bot-bottle gate
    allow``), by id; every other finding stays. An unreadable allow file
    allows nothing."""
    if config.allow_file is None or not report.blocking:
        return
    try:
        allowed = allow.allowed_ids(Path(config.allow_file))
    except allow.AllowError as exc:
        log.error("allow list unreadable; no finding allowed", error=exc.message)
        return
    passed = [f for f in report.blocking if report.id_of(f) in allowed]
    for f in passed:
        log.warning(
            "finding allowed by the operator",
            repo=repo,
            **_finding_fields(report, f),
        )
        _say(f"allowed by the operator: {_describe(f, report.hidden_names, report.id_of(f))}")
    if passed:
        gone = {id(f) for f in passed}
        report.findings = [f for f in report.findings if id(f) not in gone]


def _finding_fields(report: scan.Report, f: Finding) -> dict[str, Any]:
    loc = f.location
    hidden = loc.part == "ref_name" or (loc.name is not None and loc.name in report.hidden_names)
    return {
        "finding_id": report.id_of(f),
        "detector": f.detector,
        "rule": f.rule,
        "part": loc.part,
        "commit": loc.commit,
        "path": "[withheld]" if hidden else loc.name,
        "line": loc.line,
    }


def _describe(f: Finding, hidden: set[str], fid: str | None = None) -> str:
    loc = f.location
    bits = [f"{f.detector}/{f.rule}"]
    if loc.commit:
        bits.append(f"in commit {loc.commit[:12]}")
    if loc.part == "commit_message":
        bits.append("(commit message)")
    elif loc.part == "commit_header":
        bits.append("(commit header)")
    elif loc.part == "ref_name":
        bits.append("(the name of a pushed ref; withheld)")
    elif loc.name is not None:
        # A file name that itself holds a secret is never printed.
        shown = "[name withheld: it matched]" if loc.name in hidden else loc.name
        bits.append(f"file {shown}" + (" (file name)" if loc.part == "file_name" else ""))
    if loc.line is not None:
        bits.append(f"line {loc.line}")
    tail = f" [finding {fid}]" if fid else ""
    return " ".join(bits) + f": {f.snippet}{tail}"


def _reject(report: scan.Report, name: str, log: Any) -> int:
    blocking = report.blocking
    log.warning(
        "push rejected: secrets found",
        repo=name,
        findings=[_describe(f, report.hidden_names) for f in blocking[:MAX_LISTED]],
        count=len(blocking),
    )
    # One record per finding: what 'bot-bottle gate allow' looks an id up in.
    for f in blocking[:MAX_LISTED]:
        log.warning("push finding", repo=name, **_finding_fields(report, f))
    _say(f"push rejected: {len(blocking)} secret(s) found in commits new to the upstream:")
    for f in blocking[:MAX_LISTED]:
        _say(f"  {_describe(f, report.hidden_names, report.id_of(f))}")
    if len(blocking) > MAX_LISTED:
        _say(f"  ... and {len(blocking) - MAX_LISTED} more")
    _say(
        "Nothing was sent upstream. Remove the secret from those commits (git rebase -i, "
        "git commit --amend) and push again; if it is not a secret, ask the operator "
        "to allow that finding id ('bot-bottle gate allow <bottle> <finding id>'), "
        "then push the same commits again."
    )
    return 1


def _rejected_lines(porcelain: str) -> list[str]:
    # Porcelain lines: "<flag>\t<from>:<to>\t<summary> (<reason>)"; "!" = rejected.
    out: list[str] = []
    for line in porcelain.splitlines():
        if line.startswith("!"):
            parts = line.split("\t")
            if len(parts) >= 3:
                out.append(f"{parts[1].split(':')[-1]}: {parts[2]}")
    return out


# -- entry point ---------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot_bottle_sidecars.gitgate.hooks")
    sub = parser.add_subparsers(dest="hook", required=True)
    for hook in ("access", "pre-receive"):
        p = sub.add_parser(hook)
        p.add_argument("--base", type=Path, required=True)
        if hook == "pre-receive":
            p.add_argument("--repo", required=True)
        else:
            p.add_argument("rest", nargs="*")
    args = parser.parse_args(argv)
    # Taken out of the environment first, so no git or ssh this hook runs
    # inherits them: only the scan holds the values, in memory.
    known = take_known_secrets(os.environ)
    layout = Layout(args.base)
    try:
        try:
            config = Runtime.load(layout.runtime)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BotBottleError(f"git-gate state is unreadable ({type(exc).__name__})") from exc
        if args.hook == "access":
            return access(config, layout, args.rest)
        return pre_receive(config, layout, args.repo, sys.stdin, known_secrets=known)
    except BotBottleError as exc:
        # Fail closed with a message, never a traceback: git shows the agent our
        # reason, and nothing of the push goes upstream.
        msg = f"{PREFIX} {exc.message}"
        print(msg, file=sys.stdout if args.hook == "access" else sys.stderr)
        return 1
    except Exception as exc:
        msg = f"{PREFIX} internal error ({type(exc).__name__}); refused. See the git-gate log."
        print(msg, file=sys.stdout if args.hook == "access" else sys.stderr)
        with contextlib.suppress(Exception):
            get_logger("bot_bottle_sidecars.gitgate").exception("hook crashed", hook=args.hook)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
