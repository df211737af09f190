"""Talking to the real upstream over SSH: fetch, default branch, forward a push.

Every ssh the gate runs pins the upstream's host key (no TOFU), never prompts
(``BatchMode``: without it an unreachable or misconfigured upstream hangs the
agent's git), gives up after a connect timeout, offers only the repo's key and
ignores every ssh config and agent of the sidecar.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ZERO = "0" * 40
_SYMREF_RE = re.compile(r"^ref: (refs/heads/[^\t\n]+)\tHEAD$", re.MULTILINE)


@dataclass(frozen=True)
class Upstream:
    url: str
    key_file: Path
    known_hosts: Path
    connect_timeout: int = 10

    def ssh_command(self) -> str:
        """``GIT_SSH_COMMAND``: git runs it through a shell, so every value is quoted."""
        argv = [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.key_file),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            # ssh splits this option's value on spaces (it takes a list):
            # quote it for ssh, then the whole argument for the shell.
            f'UserKnownHostsFile="{self.known_hosts}"',
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={int(self.connect_timeout)}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-o",
            "LogLevel=ERROR",
        ]
        return " ".join(shlex.quote(a) for a in argv)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        for var in ("GIT_SSH", "SSH_AUTH_SOCK", "GIT_ASKPASS", "SSH_ASKPASS", "GIT_PROXY_COMMAND"):
            env.pop(var, None)
        env.update(
            GIT_SSH_COMMAND=self.ssh_command(),
            GIT_SSH_VARIANT="ssh",
            GIT_TERMINAL_PROMPT="0",
            # The sidecar's own git configuration must not redirect or
            # rewrite the upstream (an insteadOf there would loop or leak).
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL="/dev/null",
        )
        return env


@dataclass(frozen=True)
class Result:
    ok: bool
    stdout: str
    stderr: str

    def reason(self) -> str:
        """The most telling line of git/ssh's stderr, for a one-line message."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        for word in _TELLING:
            for ln in lines:
                if word in ln.lower():
                    return _printable(ln)
        return _printable(lines[-1]) if lines else "no error output"


# ssh's own summary lines, most specific first (a changed host key prints a
# banner of warnings before "Host key verification failed.").
_TELLING = (
    "host key verification failed",
    "connection refused",
    "timed out",
    "permission denied",
    "could not resolve",
    "no route to host",
    "network is unreachable",
    "does not appear to be a git repository",
    "not found",
)


def _printable(text: str, limit: int = 300) -> str:
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean[:limit]


def _git(
    args: Sequence[str],
    *,
    repo: Path,
    env: Mapping[str, str],
    timeout: float,
) -> Result:
    try:
        proc = subprocess.run(
            ["git", f"--git-dir={repo}", *args],
            capture_output=True,
            text=True,
            errors="replace",
            env=dict(env),
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Result(False, "", f"timed out after {timeout:.0f}s")
    return Result(proc.returncode == 0, proc.stdout, proc.stderr)


def default_branch(upstream: Upstream, repo: Path, *, timeout: float = 120) -> tuple[Result, str]:
    """The upstream's HEAD (``refs/heads/...``) or ``""`` when it has none (empty repo)."""
    res = _git(
        ["ls-remote", "--symref", upstream.url, "HEAD"],
        repo=repo,
        env=upstream.env(),
        timeout=timeout,
    )
    if not res.ok:
        return res, ""
    m = _SYMREF_RE.search(res.stdout)
    return res, m.group(1) if m else ""


def fetch(upstream: Upstream, repo: Path, *, timeout: float = 600) -> Result:
    """Mirror the upstream's branches and tags into ``repo`` (pruning deleted ones)."""
    return _git(
        [
            "fetch",
            "--quiet",
            "--prune",
            "--no-write-fetch-head",
            "--update-head-ok",
            upstream.url,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
        repo=repo,
        env=upstream.env(),
        timeout=timeout,
    )


def set_head(repo: Path, ref: str) -> bool:
    """Point the mirror's HEAD at ``ref``. ``git init --bare`` leaves it at
    ``master``, which breaks clones of repos whose default branch is not."""
    check = subprocess.run(
        ["git", "check-ref-format", ref], capture_output=True, check=False, env=_plain_env()
    )
    if check.returncode != 0:
        return False
    proc = subprocess.run(
        ["git", f"--git-dir={repo}", "symbolic-ref", "HEAD", ref],
        capture_output=True,
        check=False,
        env=_plain_env(),
    )
    return proc.returncode == 0


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def is_delete(self) -> bool:
        return self.new == ZERO

    @property
    def is_create(self) -> bool:
        return self.old == ZERO


def push(
    upstream: Upstream,
    updates: Sequence[tuple[RefUpdate, bool]],
    *,
    env: Mapping[str, str],
    timeout: float = 3600,
) -> Result:
    """Forward ``(update, force)`` pairs to the upstream in one ``git push``.

    Runs inside the pre-receive hook: ``env`` carries git's quarantine
    variables, so the pushed objects are readable before the gate accepts
    them. Forced updates and deletions carry a lease on the old value the
    agent saw (``--force-with-lease=ref:old``), so a commit that reached the
    upstream meanwhile is never overwritten silently.
    """
    args = ["push", "--porcelain", "--no-verify"]
    specs: list[str] = []
    for update, force in updates:
        if update.is_delete:
            specs.append(f":{update.ref}")
        else:
            # A forced update is sent as a lease, not as "+new:ref": a "+"
            # refspec would override the lease and clobber upstream commits
            # the agent never saw; the lease permits the non-fast-forward
            # exactly when the upstream is still where the agent saw it.
            specs.append(f"{update.new}:{update.ref}")
        if (force or update.is_delete) and not update.is_create:
            args.append(f"--force-with-lease={update.ref}:{update.old}")
    try:
        proc = subprocess.run(
            ["git", *args, upstream.url, *specs],
            capture_output=True,
            text=True,
            errors="replace",
            env=upstream.env(env),
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Result(False, "", f"timed out after {timeout:.0f}s")
    return Result(proc.returncode == 0, proc.stdout, proc.stderr)


def _plain_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    return env
