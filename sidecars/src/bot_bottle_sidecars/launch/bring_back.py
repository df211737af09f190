"""Bringing an agent's commits back into the operator's repository, as git
objects, scanned; never as files. Any backend uses it the same way.

The backend supplies a command that serves the bottle's git directory with
``git-upload-pack`` (the Docker backend: ``docker exec -i`` into the
bottle; the Kubernetes backend: a local upload-pack on a rebuilt copy of
the pod's objects and refs, see ``bot_bottle_kubernetes.bring_back``). The
host's git reads that pack stream like any remote's (``fsck``-checked) into
a quarantine repository, the new commits are scanned with git-gate's push
scan, and only then are their objects piped into the host repository (as
its owner) and a ref ``refs/heads/bot-bottle/<slug>/<branch>`` set. No host
git process opens the bottle's git directory, so none of its config, hooks
or redirections is honoured; bot-bottle's own git runs read no system or
global config (:func:`clean_env`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bot_bottle.errors import BotBottleError
from bot_bottle.termtext import visible

#: Where the bottle's git directory is, as the bottle sees it.
WORKSPACE_GIT = "/workspace/.git"
#: The namespace the agent's branches land in, in the host repository.
REF_PREFIX = "refs/heads/bot-bottle"
GIT_TIMEOUT = 600.0
#: How large the pack of the agent's commits may be (MiB) before bring-back
#: refuses it; ``BOT_BOTTLE_BRING_BACK_MAX_MB`` overrides it.
BRING_BACK_MAX_MB = 1024


def clean_env() -> dict[str, str]:
    """bot-bottle's own git runs: no system/global config of whoever runs
    bot-bottle may change what is parsed; no prompts; no replace refs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_TERMINAL_PROMPT="0",
        GIT_NO_REPLACE_OBJECTS="1",
        LC_ALL="C",
    )
    return env


def _file_size_limit(limit: int) -> Callable[[], None]:
    """No file the process (and its children: index-pack) writes grows past
    ``limit`` bytes (RLIMIT_FSIZE; the writer gets SIGXFSZ)."""

    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def bring_back_cap() -> int:
    """The bring-back cap in bytes (``BOT_BOTTLE_BRING_BACK_MAX_MB``)."""
    raw = os.environ.get("BOT_BOTTLE_BRING_BACK_MAX_MB", "").strip()
    try:
        mb = int(raw) if raw else BRING_BACK_MAX_MB
    except ValueError:
        mb = BRING_BACK_MAX_MB
    return max(mb, 1) * 2**20


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int

    @classmethod
    def of(cls, path: Path) -> Owner:
        st = path.stat()
        return cls(st.st_uid, st.st_gid)

    def run_kwargs(self) -> dict[str, object]:
        """Run as this owner when bot-bottle is root and the owner is not:
        objects written into the host repository must be the owner's."""
        if os.geteuid() == 0 and self.uid != 0:
            return {"user": self.uid, "group": self.gid, "extra_groups": []}
        return {}


def git(
    args: Sequence[str],
    *,
    git_dir: Path,
    owner: Owner | None = None,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    max_file_bytes: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    kwargs = owner.run_kwargs() if owner else {}
    if max_file_bytes is not None:
        kwargs["preexec_fn"] = _file_size_limit(max_file_bytes)
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=dict(env) if env is not None else clean_env(),
        timeout=GIT_TIMEOUT,
        check=False,
        cwd="/",
        **kwargs,  # type: ignore[arg-type]
    )
    if check and proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-400:]
        raise BotBottleError(f"git {args[0]} failed in {git_dir}: {visible(err)}")
    return proc


class Target(Protocol):
    """Where the commits go: the host repository (None: --cwd was not one),
    its owner, the bottle's slug and the branch tips at launch."""

    @property
    def host_git(self) -> Path | None: ...
    @property
    def host_owner(self) -> Owner | None: ...
    @property
    def slug(self) -> str: ...
    @property
    def launch_tips(self) -> dict[str, str]: ...


@dataclass
class HostRepo:
    """A :class:`Target` read from the host at launch (backends without a
    bottle-owned git dir on the host)."""

    slug: str
    host_git: Path | None = None
    host_owner: Owner | None = None
    launch_tips: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, cwd: Path, slug: str) -> HostRepo:
        dot_git = cwd / ".git"
        if dot_git.is_symlink() or not dot_git.is_dir():
            return cls(slug=slug)
        owner = Owner.of(dot_git)
        refs = git(["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/"],
                   git_dir=dot_git, owner=owner).stdout.decode()  # fmt: skip
        tips: dict[str, str] = {}
        for line in refs.splitlines():
            sha, _, ref = line.partition(" ")
            tips[ref] = sha
        return cls(slug=slug, host_git=dot_git, host_owner=owner, launch_tips=tips)


# -- bringing the agent's commits back -------------------------------------------


@dataclass
class BroughtBack:
    branch: str
    ref: str = ""
    sha: str = ""
    commits: int = 0
    refused: str = ""

    def line(self) -> str:
        name = visible(self.branch)
        if self.refused:
            return f"{name}: {self.refused}"
        return f"{visible(self.ref)} -> {self.sha[:12]} ({self.commits} new commit(s))"


@dataclass
class BringBackResult:
    items: list[BroughtBack] = field(default_factory=list)
    error: str = ""
    #: The cap (bytes) the agent's pack exceeded; nothing was brought back.
    over_cap: int = 0


Scanner = Callable[[Path, str, str], tuple[int, list[str]]]


def default_scanner(known_secrets: Sequence[object] = ()) -> Scanner:
    """git-gate's push scan (the same code, the same detectors)."""

    def scan(repo: Path, tip: str, branch: str) -> tuple[int, list[str]]:
        from bot_bottle.plugins import PluginHost
        from bot_bottle_sidecars.gitgate import scan as gate_scan

        detectors = gate_scan.load_detectors(PluginHost().load(), None)
        report = gate_scan.scan_push(
            repo, [tip], detectors, target="the host repository", env=clean_env(),
            ref_names=[branch], known_secrets=list(known_secrets),  # type: ignore[arg-type]
        )  # fmt: skip
        problems = [
            f"{f.rule} in {f.location.part}"
            + (f" of {f.location.commit[:12]}" if f.location.commit else "")
            for f in report.blocking
        ]
        return report.commits, problems

    return scan


def bring_back(
    ws: Target,
    upload_pack: Sequence[str],
    scanner: Scanner,
    quarantine: Path,
    max_bytes: int | None = None,
    remote_git_dir: str = WORKSPACE_GIT,
) -> BringBackResult:
    """Fetch the bottle's branches (``upload_pack`` runs git-upload-pack on
    ``remote_git_dir``, e.g. ``docker exec -i`` into the bottle), scan what
    is new, and set ``refs/heads/bot-bottle/<slug>/<branch>`` in the host repo."""
    result = BringBackResult()
    if ws.host_git is None or ws.host_owner is None:
        return result
    owner = ws.host_owner
    if quarantine.exists():
        shutil.rmtree(quarantine)
    q = quarantine
    git(["init", "-q", "--bare"], git_dir=q)
    (q / "objects" / "info" / "alternates").write_text(f"{ws.host_git / 'objects'}\n")
    host_refs = git(["for-each-ref", "--format=%(objectname) %(refname)"],
                     git_dir=ws.host_git, owner=owner).stdout.decode()  # fmt: skip
    host_shas = sorted({line.split(" ", 1)[0] for line in host_refs.splitlines() if line})
    commands = "".join(f"create refs/host/{i} {sha}\n" for i, sha in enumerate(host_shas)).encode()
    if commands:
        git(["update-ref", "--stdin"], git_dir=q, stdin=commands)
    # ext:: runs the command given (no shell): the bottle's upload-pack; the
    # host's git only reads the pack stream, checked object by object.
    remote = "ext::" + " ".join(upload_pack) + f" %S {remote_git_dir}"
    if any(" " in part or "%" in part for part in (*upload_pack, remote_git_dir)):
        raise BotBottleError("the upload-pack command must not contain spaces or '%'")
    # One pack file (unpackLimit 1), capped in size: what the bottle sends
    # never fills the host's disk or memory.
    cap = bring_back_cap() if max_bytes is None else max_bytes
    fetch = git(
        ["-c", "protocol.ext.allow=always", "-c", "transfer.fsckObjects=true",
         "-c", "fetch.fsckObjects=true", "-c", "fetch.unpackLimit=1", "fetch", "--no-tags",
         "--no-write-fetch-head", "--no-recurse-submodules", remote,
         "+refs/heads/*:refs/agent/*"],
        git_dir=q, check=False, max_file_bytes=cap,
        env={**clean_env(), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )  # fmt: skip
    if fetch.returncode != 0 and _reached(q / "objects" / "pack", cap):
        result.over_cap = cap
        result.error = f"the agent's commits are larger than the cap of {cap // 2**20} MiB"
        shutil.rmtree(q, ignore_errors=True)
        return result
    if fetch.returncode != 0:
        result.error = visible(fetch.stderr.decode("utf-8", "replace").strip()[-400:])
        return result
    fetched = git(["for-each-ref", "--format=%(objectname) %(refname)", "refs/agent/"],
                   git_dir=q).stdout.decode()  # fmt: skip
    tips: dict[str, str] = {}
    for line in fetched.splitlines():
        sha, _, ref = line.partition(" ")
        tips[ref.removeprefix("refs/agent/")] = sha
    # The scan takes "new" as "not reachable from any ref": only the host's
    # refs stay; the fetched objects are kept, unreferenced, in the quarantine.
    if tips:
        git(["update-ref", "--stdin"], git_dir=q,
             stdin="".join(f"delete refs/agent/{b}\n" for b in tips).encode())  # fmt: skip
    for branch, sha in sorted(tips.items()):
        if ws.launch_tips.get(f"refs/heads/{branch}") == sha:
            continue
        item = BroughtBack(branch=branch, sha=sha)
        result.items.append(item)
        try:
            item.commits, problems = scanner(q, sha, branch)
        except Exception as exc:  # the scan could not run: nothing comes back
            item.refused = f"the scan failed: {visible(str(exc))[:300]}"
            continue
        if problems:
            item.refused = "DLP: " + "; ".join(visible(p) for p in problems[:5])
            continue
        item.ref = f"{REF_PREFIX}/{ws.slug}/{branch}"
        _import(q, ws.host_git, owner, sha, host_shas, item.ref)
    return result


def _reached(pack_dir: Path, cap: int) -> bool:
    with contextlib.suppress(OSError):
        return any(p.stat().st_size >= cap for p in pack_dir.iterdir())
    return False


def _pipe_pack(q: Path, host_git: Path, owner: Owner, revs: bytes) -> None:
    """``pack-objects`` in the quarantine streamed into ``index-pack`` in the
    host repository (as its owner): the pack is never held in memory."""
    import tempfile

    with tempfile.TemporaryFile() as revs_file:
        revs_file.write(revs)
        revs_file.seek(0)
        packer = subprocess.Popen(
            ["git", f"--git-dir={q}", "pack-objects", "--stdout", "--revs", "--thin", "-q"],
            stdin=revs_file, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=clean_env(), cwd="/",
        )  # fmt: skip
        assert packer.stdout is not None
        try:
            index = subprocess.run(
                ["git", f"--git-dir={host_git}", "index-pack", "--stdin", "--fix-thin",
                 "--strict"],
                stdin=packer.stdout, capture_output=True, env=clean_env(), cwd="/",
                timeout=GIT_TIMEOUT, check=False, **owner.run_kwargs(),  # type: ignore[arg-type]
            )  # fmt: skip
        finally:
            packer.stdout.close()
            packed = packer.wait(timeout=GIT_TIMEOUT)
    if packed != 0 or index.returncode != 0:
        err = index.stderr.decode("utf-8", "replace").strip()[-400:]
        raise BotBottleError(f"git index-pack failed in {host_git}: {visible(err)}")


def _import(q: Path, host_git: Path, owner: Owner, sha: str, have: Sequence[str], ref: str) -> None:
    """The new objects, as a pack piped from the quarantine into the host
    repository, written by its owner; then the ref."""
    revs = "".join([f"{sha}\n", *(f"^{h}\n" for h in have)]).encode()
    missing = git(["rev-list", "--objects", "--stdin"], git_dir=q, stdin=revs).stdout
    if missing.strip():
        _pipe_pack(q, host_git, owner, revs)
    git(["update-ref", "-m", "bot-bottle: brought back from the bottle", ref, sha],
         git_dir=host_git, owner=owner)  # fmt: skip
