"""The git-gate daemon: prepares one bare mirror per repo and runs ``git daemon``.

``python -m bot_bottle_sidecars.gitgate --config PATH --base DIR --port N``

Startup (idempotent, so a restarted daemon reuses its mirrors):

1. validate the config (names, URLs; a config file is input like any other),
2. copy each repo key from its (possibly read-only, foreign-owned) mount to
   ``<base>/.gate/keys/<name>`` with mode 0600 — ssh refuses keys others can
   read, and a bind mount keeps the host's uid and mode,
3. ``git init --bare`` each mirror and install its pre-receive hook,
4. run ``git daemon`` over the mirrors only (``--strict-paths`` whitelist),
   with receive-pack enabled and the access hook in front of every request.

It runs in the foreground; SIGTERM/SIGINT stop git daemon and exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bot_bottle.errors import BotBottleError
from bot_bottle.gitgate.config import GateConfig
from bot_bottle.gitgate.spec import GitGateError
from bot_bottle.log import configure_logging, get_logger
from bot_bottle_sidecars.gitgate.layout import (
    Layout,
    access_hook_argv,
    pre_receive_argv,
    render_hook_script,
)
from bot_bottle_sidecars.gitgate.runtime import Runtime

_MIRROR_CONFIG = {
    # Pushes arrive as the agent made them: forced updates and deletions are
    # the agent's call, forwarded as such; the upstream has the last word.
    "receive.denyNonFastForwards": "false",
    "receive.denyDeletes": "false",
    "receive.fsckObjects": "true",
    "gc.auto": "0",
    "core.logAllRefUpdates": "false",
}


def _git(args: Sequence[str]) -> None:
    proc = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GitGateError(f"git {args[0]} failed: {proc.stderr.strip()[:300]}")


def _write_script(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o755)
    tmp.replace(path)


def _copy_key(src: Path, dest: Path, repo: str) -> None:
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise GitGateError(
            f"repo {repo!r}: cannot read its key {src}: {exc.strerror}",
            hint="the launcher stages each repo key before starting git-gate",
        ) from None
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def prepare(
    config: GateConfig, layout: Layout, python: str, *, allow_file: str | None = None
) -> list[Path]:
    """Create or refresh every mirror; return their paths."""
    layout.base.mkdir(parents=True, exist_ok=True)
    layout.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = layout.base.resolve()
    Runtime.from_config(config, allow_file=allow_file).write(layout.runtime)
    mirrors: list[Path] = []
    for repo in config.repos:
        if not Path(repo.known_hosts).is_file():
            raise GitGateError(
                f"repo {repo.name!r}: pinned known_hosts file {repo.known_hosts} is missing",
                hint="the launcher writes it from the repo's host_key",
            )
        _copy_key(Path(repo.key_file), layout.key(repo.name), repo.name)
        mirror = layout.mirror(repo.name)
        if not (mirror / "HEAD").is_file():
            _git(["init", "--quiet", "--bare", str(mirror)])
        for key, value in _MIRROR_CONFIG.items():
            _git([f"--git-dir={mirror}", "config", key, value])
        hooks = mirror / "hooks"
        hooks.mkdir(exist_ok=True)
        for sample in hooks.glob("*.sample"):
            sample.unlink()
        _write_script(
            hooks / "pre-receive",
            render_hook_script(pre_receive_argv(python, base, repo.name)),
        )
        mirrors.append(mirror)
    _write_script(
        layout.access_hook,
        render_hook_script(access_hook_argv(python, base), pass_args=True),
    )
    return mirrors


MAX_CONNECTIONS = 16


def daemon_argv(layout: Layout, mirrors: Sequence[Path], *, listen: str, port: int) -> list[str]:
    return [
        "git",
        "daemon",
        "--reuseaddr",
        "--informative-errors",
        "--export-all",
        "--strict-paths",
        f"--base-path={layout.base.resolve()}",
        f"--listen={listen}",
        f"--port={port}",
        "--enable=receive-pack",
        # git daemon runs the access hook through a shell: quote its path.
        f"--access-hook={shlex.quote(str(layout.access_hook.resolve()))}",
        "--init-timeout=30",
        # Each connection runs the access hook (a Python process refreshing
        # the mirror over ssh, ~35 MB). The bundle's relay lets at most
        # sidecar_layout.GIT_CONCURRENCY through at once (the rest wait);
        # this bound is for anything else, beyond which git daemon ends the
        # oldest connection from the same address.
        f"--max-connections={MAX_CONNECTIONS}",
        "--",
        *[str(m.resolve()) for m in mirrors],
    ]


#: Hook events an agent can repeat at will without anything new to say
#: (a fetch loop while the upstream is down): one line per repo per
#: :data:`_REPEAT_SECONDS`, with the number folded into the next one. Push
#: refusals and every other event are always copied.
_REPEATED = frozenset({"upstream unreachable; request refused"})
_REPEAT_SECONDS = 10.0


def _repeat_key(line: str) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("event") not in _REPEATED:
        return None
    return f"{record.get('event')}|{record.get('repo')}"


def _relay(path: Path, stop: threading.Event, out: Any) -> None:
    """Copy the hooks' log lines into the daemon's own log stream."""
    path.touch(exist_ok=True)
    seen: dict[str, tuple[float, int]] = {}
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        fh.seek(0, os.SEEK_END)
        while True:
            line = fh.readline()
            if line:
                key = _repeat_key(line)
                if key is not None:
                    now = time.monotonic()
                    last, skipped = seen.get(key, (0.0, 0))
                    if last and now - last < _REPEAT_SECONDS:
                        seen[key] = (last, skipped + 1)
                        continue
                    seen[key] = (now, 0)
                    if skipped:
                        record = json.loads(line)
                        record["repeated_before"] = skipped
                        line = json.dumps(record) + "\n"
                out.write(line)
                out.flush()
                continue
            if stop.wait(0.2):
                rest = fh.read()
                if rest:
                    out.write(rest)
                    out.flush()
                return


def run(args: argparse.Namespace) -> int:
    configure_logging("json")
    log = get_logger("bot_bottle_sidecars.gitgate")
    config = GateConfig.load(args.config)
    layout = Layout(args.base)
    if shutil.which("git") is None:
        raise GitGateError("git is not installed in the sidecar")
    mirrors = prepare(config, layout, sys.executable, allow_file=args.allow_file)
    argv = daemon_argv(layout, mirrors, listen=args.listen, port=args.port)
    stop = threading.Event()
    relay = threading.Thread(
        target=_relay, args=(layout.hook_log, stop, sys.stderr), daemon=True, name="hook-log"
    )
    relay.start()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    log.info(
        "git-gate listening",
        listen=args.listen,
        port=args.port,
        repos=[r.name for r in config.repos],
    )

    def forward(signum: int, _frame: FrameType | None) -> None:
        proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    code = proc.wait()
    stop.set()
    relay.join(timeout=2)
    log.info("git-gate stopped", exit_code=code)
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot_bottle_sidecars.gitgate",
        description="git-gate: git daemon over per-repo mirrors with scanned, forwarded pushes",
    )
    parser.add_argument("--config", type=Path, required=True, help="the gate's config.json")
    parser.add_argument("--base", type=Path, required=True, help="directory for the mirrors")
    parser.add_argument("--port", type=int, default=9418)
    parser.add_argument("--listen", default="0.0.0.0")  # noqa: S104 - the bottle's internal network
    parser.add_argument(
        "--allow-file",
        help="the operator's allow list of finding ids (read-only mount; bot-bottle gate allow)",
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BotBottleError as exc:
        configure_logging("json")
        get_logger("bot_bottle_sidecars.gitgate").error(
            "git-gate cannot start", error=exc.message, hint=exc.hint
        )
        return 2
