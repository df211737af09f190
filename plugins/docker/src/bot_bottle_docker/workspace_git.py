"""The workspace's git: the bottle has its own git directory; the host's is
never reachable from the agent, and the agent's commits come back as refs,
scanned.

Threat: whatever the agent writes that the *operator's* git later reads as
configuration runs as the operator (``core.fsmonitor``, ``core.hooksPath``,
hooks, aliases, ``includeIf``, ``commondir``, gitfiles, submodule git dirs).
Read-only mounts over parts of the host's ``.git`` close single paths, not
the class (a review got code run through ``commondir`` and by renaming
``.git``). So the host's ``.git`` is not in the bottle at all:

* ``/workspace/.git`` is a bottle-owned git directory in the state dir,
  mounted over the host's: a mountpoint cannot be renamed, removed or
  replaced by an agent without ``CAP_SYS_ADMIN``. It starts with the host's
  refs, ``HEAD`` and index; its objects are borrowed (``alternates``) from the
  host's ``objects`` directory, mounted read-only at :data:`HOST_OBJECTS`.
* Submodules of the host repository are the same hole one level down (the
  operator's ``git status`` recurses into a populated submodule and reads its
  git dir). The ``.git`` of each populated submodule is mounted read-only
  over itself; an unpopulated one's (empty) directory is mounted read-only,
  so the agent cannot populate it.
* The agent's commits come back only through :func:`bring_back`, run by
  bot-bottle: ``git upload-pack`` runs *inside the bottle* (as the agent),
  the host's git reads its pack stream like any remote's (``fsck``-checked)
  into a quarantine repository in the state dir, the new commits are scanned
  with git-gate's push scan, and only then are their objects piped into the
  host repository (as its owner) and a ref ``refs/heads/bot-bottle/<slug>/<branch>``
  set. No host git process ever opens the bottle's git directory, so none
  of its config, hooks or redirections can be honoured.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot_bottle_sidecars.launch.bring_back import Owner
from bot_bottle_sidecars.launch.bring_back import clean_env as _clean_env
from bot_bottle_sidecars.launch.bring_back import git as _git

from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger
from bot_bottle.termtext import visible

log = get_logger("bot_bottle_docker.workspace_git")

WORKSPACE = "/workspace"
#: Where the host repository's object store is mounted (read-only) in the agent.
HOST_OBJECTS = "/run/bot-bottle/host-objects"
#: Where each submodule's object store is mounted (read-only), by module name.
HOST_MODULES = "/run/bot-bottle/host-modules"
#: Keys of the host repository's config the bottle's git dir starts with:
#: identity and how the working tree is read; nothing that names a program.
COPIED_CONFIG = (
    "user.name", "user.email", "core.autocrlf", "core.eol", "core.filemode",
    "core.symlinks", "core.ignorecase",
)  # fmt: skip


@dataclass
class WorkspaceGit:
    """A bottle's git directory and the host repository it came from."""

    cwd: Path
    #: The bottle's git directory (state dir); mounted at /workspace/.git.
    git_dir: Path
    slug: str
    #: The host repository's git dir, or None when --cwd is not a repository.
    host_git: Path | None = None
    host_owner: Owner | None = None
    #: Branch tips at launch (``refs/heads/...`` -> sha): unchanged ones are
    #: not brought back.
    launch_tips: dict[str, str] = field(default_factory=dict)
    #: ``(host path, container path, mode)``: submodule object stores and
    #: guards (``ro``), directories pinned as mountpoints (``rw``).
    mounts: list[tuple[Path, str, str]] = field(default_factory=list)
    #: Whether the /workspace/.git mountpoint was created by the launch
    #: (no .git on the host): removed again at teardown.
    created_mountpoint: bool = False
    #: Working-tree paths the operator's git config names (read-only here).
    config_guarded: list[str] = field(default_factory=list)
    #: Nested ``.git`` entries present at launch (not reported at teardown).
    nested_at_launch: frozenset[str] = frozenset()

    def remove_mountpoint(self) -> None:
        """The empty ``.git`` the engine created for the mount (no repository
        on the host): gone again, so the host is left as it was."""
        mountpoint = self.cwd / ".git"
        if self.created_mountpoint and mountpoint.is_dir() and not mountpoint.is_symlink():
            try:
                mountpoint.rmdir()
            except OSError as exc:
                log.warning("mountpoint_left", path=str(mountpoint), error=str(exc))

    def volumes(self) -> dict[str, dict[str, str]]:
        out = {str(self.git_dir): {"bind": f"{WORKSPACE}/.git", "mode": "rw"}}
        if self.host_git is not None:
            out[str(self.host_git / "objects")] = {"bind": HOST_OBJECTS, "mode": "ro"}
        for src, dest, mode in self.mounts:
            out[str(src)] = {"bind": dest, "mode": mode}
        return out


def prepare(cwd: Path, state_dir: Path, slug: str) -> WorkspaceGit:
    """Build the bottle's git directory for ``cwd`` (before any container)."""
    dot_git = cwd / ".git"
    if dot_git.is_symlink() or (dot_git.exists() and not dot_git.is_dir()):
        raise BotBottleError(
            f"{visible(str(dot_git))} is a file or a link (a linked worktree or a "
            "submodule checkout): bot-bottle mounts only a repository's main checkout",
            hint="use the repository's main working tree, or a clone, as --cwd",
        )
    state_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    git_dir = state_dir / "workspace.git"
    if git_dir.exists():
        shutil.rmtree(git_dir)
    _git(["init", "-q", "--bare"], git_dir=git_dir)
    _git(["config", "core.bare", "false"], git_dir=git_dir)
    ws = WorkspaceGit(cwd=cwd, git_dir=git_dir, slug=slug)
    ws.nested_at_launch = frozenset(nested_git_entries(cwd))
    if not dot_git.exists():
        ws.created_mountpoint = True
        return ws
    owner = Owner.of(dot_git)
    ws.host_git, ws.host_owner = dot_git, owner
    reach = _git(["rev-parse", "--git-dir"], git_dir=dot_git, owner=owner, check=False)
    if reach.returncode != 0:
        raise BotBottleError(
            f"the repository's owner (uid {owner.uid}) cannot use {visible(str(dot_git))}: "
            f"{visible(reach.stderr.decode('utf-8', 'replace').strip()[-200:])}",
            hint="bot-bottle writes the agent's commits into it as its owner: make its "
            "parent directories searchable by that user",
        )
    ws.launch_tips = _seed(dot_git, git_dir, owner, HOST_OBJECTS)
    # Submodules' git dirs (.git/modules/<name>): the bottle gets its own of
    # each, seeded the same way, so the agent's git works in them too; their
    # commits are not brought back.
    for rel in _module_git_dirs(dot_git / "modules"):
        mount = f"{HOST_MODULES}/{rel}/objects"
        (git_dir / "modules" / rel).mkdir(parents=True)
        _git(["init", "-q", "--bare"], git_dir=git_dir / "modules" / rel)
        _seed(dot_git / "modules" / rel, git_dir / "modules" / rel, owner, mount,
              extra_config=("core.worktree",))  # fmt: skip
        ws.mounts.append((dot_git / "modules" / rel / "objects", mount, "ro"))
    guards = _Guards(cwd)
    _submodule_guards(cwd, dot_git, owner, guards)
    ws.config_guarded = _config_guards(cwd, dot_git, owner, guards)
    ws.mounts.extend(guards.mounts())
    return ws


def _seed(
    src: Path, dest: Path, owner: Owner, objects_mount: str, extra_config: Sequence[str] = ()
) -> dict[str, str]:
    """``dest`` (a fresh git dir) gets ``src``'s refs, HEAD, index, exclude
    and harmless config keys; its objects come from ``objects_mount`` (where
    ``src``'s object store is mounted read-only in the bottle). Returns the
    branch tips."""
    _git(["config", "core.bare", "false"], git_dir=dest)
    refs = _git(["for-each-ref", "--format=%(objectname) %(refname)"], git_dir=src,
                owner=owner).stdout.decode()  # fmt: skip
    # Objects are looked up through the host's store while the refs are
    # written here, then the alternates point at the bottle's read-only mount.
    alternates = dest / "objects" / "info" / "alternates"
    alternates.write_text(f"{src / 'objects'}\n")
    tips: dict[str, str] = {}
    commands = []
    for line in refs.splitlines():
        sha, _, ref = line.partition(" ")
        commands.append(f"create {ref} {sha}\n")
        if ref.startswith("refs/heads/"):
            tips[ref] = sha
    if commands:
        _git(["update-ref", "--no-deref", "--stdin"], git_dir=dest,
             stdin="".join(commands).encode())  # fmt: skip
    head = (src / "HEAD").read_text(errors="replace").strip()
    if head.startswith("ref: refs/"):
        _git(["symbolic-ref", "HEAD", head[5:]], git_dir=dest)
    elif head:
        _git(["update-ref", "--no-deref", "HEAD", head], git_dir=dest)
    alternates.write_text(f"{objects_mount}\n")
    for key in (*COPIED_CONFIG, *extra_config):
        value = _git(["config", "--file", str(src / "config"), "--get", key],
                     git_dir=src, owner=owner, check=False).stdout.decode().strip()  # fmt: skip
        if value:
            _git(["config", key, value], git_dir=dest)
    for name in ("index", "info/exclude"):
        path = src / name
        if path.is_file() and not path.is_symlink():
            (dest / name).parent.mkdir(exist_ok=True)
            shutil.copyfile(path, dest / name)
    return tips


def _module_git_dirs(modules: Path) -> list[str]:
    """Git dirs under ``.git/modules`` (names may hold slashes); not the
    modules of modules."""
    out: list[str] = []
    if not modules.is_dir() or modules.is_symlink():
        return out
    for root, dirs, _files in os.walk(modules):
        here = Path(root)
        if (here / "HEAD").is_file() and (here / "objects").is_dir():
            out.append(str(here.relative_to(modules)))
            dirs.clear()
        else:
            dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
    return sorted(out)


class _Guards:
    """Read-only mounts over paths the host's git reads as code, each with
    every directory above it (below /workspace) bind-mounted onto itself
    read-write: a mountpoint cannot be renamed or removed, but the directory
    holding one can, carrying the mount away (``mv mod x && mkdir -p
    mod/.git``). Pinning the whole chain closes that."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.real_cwd = cwd.resolve()
        self.pinned: dict[str, Path] = {}
        self.guarded: dict[str, Path] = {}

    def inside(self, rel: str) -> bool:
        path = self.cwd / rel
        parts = Path(rel).parts
        if not parts or parts[0] in ("..", ".git") or Path(rel).is_absolute():
            return False
        for i in range(1, len(parts) + 1):
            if (self.cwd / Path(*parts[:i])).is_symlink():
                return False
        return path.resolve().is_relative_to(self.real_cwd)

    def guard(self, rel: str, *, pin_self: bool = False) -> None:
        if not self.inside(rel):
            raise BotBottleError(
                f"{visible(rel)} goes through a link out of the workspace",
                hint="replace the link with the file or directory it points to",
            )
        self.guarded[rel] = self.cwd / rel
        top = Path(rel) if pin_self else Path(rel).parent
        if str(top) == ".":
            return
        for ancestor in [*reversed(top.parents), top]:
            if str(ancestor) != "." and (self.cwd / ancestor).is_dir():
                self.pinned[str(ancestor)] = self.cwd / ancestor

    def mounts(self) -> list[tuple[Path, str, str]]:
        pins = {r: p for r, p in self.pinned.items() if r not in self.guarded}
        out = [(p, f"{WORKSPACE}/{r}", "rw") for r, p in sorted(pins.items())]
        out += [(p, f"{WORKSPACE}/{r}", "ro") for r, p in sorted(self.guarded.items())]
        return out


def _submodule_guards(cwd: Path, dot_git: Path, owner: Owner, guards: _Guards) -> None:
    """Each gitlink of the host's index: its ``.git`` (populated) or its
    directory (unpopulated) read-only, so the agent cannot give the
    operator's recursive ``git status`` a git dir of its own."""
    listing = _git(["ls-files", "-s", "-z"], git_dir=dot_git, owner=owner, check=False,
                   env={**_clean_env(), "GIT_WORK_TREE": str(cwd)}).stdout  # fmt: skip
    for entry in listing.split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        if not meta.startswith(b"160000 "):
            continue
        rel = path.decode("utf-8", "surrogateescape")
        if not guards.inside(rel):
            raise BotBottleError(
                f"submodule path {visible(rel)} goes through a link out of the workspace",
                hint="replace the link with the submodule's directory",
            )
        sub_git = cwd / rel / ".git"
        if sub_git.is_symlink():
            raise BotBottleError(
                f"{visible(str(sub_git))} is a symbolic link; bot-bottle will not mount it",
                hint="replace the link with the file or directory it points to",
            )
        if sub_git.exists():
            guards.guard(f"{rel}/.git", pin_self=False)
        elif (cwd / rel).is_dir():
            guards.guard(rel)


#: Config keys whose value is a path (a directory or a config file).
_PATH_KEY = re.compile(r"^(core\.hookspath|include\.path|includeif\..+\.path)$")
#: Config keys whose value is a program (a command line) git runs.
_PROGRAM_KEY = re.compile(
    r"^(core\.(fsmonitor|sshcommand|pager|editor|askpass|gitproxy)|gpg(\..+)?\.program"
    r"|sequence\.editor|diff\.external|diff\..+\.(textconv|command)|merge\..+\.driver"
    r"|filter\..+\.(clean|smudge|process)|credential(\..+)?\.helper|alias\..+|pager\..+"
    r"|interactive\.difffilter|web\.browser|browser\..+\.(cmd|path)|man\..+\.(cmd|path)"
    r"|mergetool\..+\.cmd|difftool\..+\.cmd|uploadpack\.packobjectshook)$"
)


def _config_guards(cwd: Path, dot_git: Path, owner: Owner, guards: _Guards) -> list[str]:
    """Paths in the working tree that the operator's own git config names:
    ``core.hooksPath = .githooks`` (husky), ``include.path = ../.gitconfig``,
    ``alias.x = !./scripts/x.sh``, a filter or diff driver that is a script
    of the repository, ... The agent could rewrite them, and the operator's
    git would run them; they are mounted read-only. The config is read as
    the owner's git reads it (system, global, repository). Returns the
    guarded paths (for the launch's output)."""
    import pwd
    import shlex

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "XDG_"))}
    env["LC_ALL"] = "C"
    # The owner's global config is theirs to read; a uid with no account has none.
    env["HOME"] = "/nonexistent"
    with contextlib.suppress(KeyError):
        env["HOME"] = pwd.getpwuid(owner.uid).pw_dir
    listing = _git(["--work-tree", str(cwd), "config", "--list", "-z"], git_dir=dot_git,
                   owner=owner, env=env).stdout  # fmt: skip
    found: list[str] = []
    for item in listing.split(b"\0"):
        key, _, raw = item.decode("utf-8", "surrogateescape").partition("\n")
        key = key.lower()
        if not raw:
            continue
        if _PATH_KEY.match(key):
            # include paths are relative to the git dir; hooksPath to the work tree.
            base = dot_git if key != "core.hookspath" else cwd
            candidates = [os.path.normpath(base / Path(raw).expanduser())]
            want_file = False
        elif _PROGRAM_KEY.match(key) and (not key.startswith("alias.") or raw.startswith("!")):
            try:
                tokens = shlex.split(raw.lstrip("!"))
            except ValueError:
                tokens = raw.lstrip("!").split()
            candidates = [os.path.normpath(cwd / Path(t).expanduser()) for t in tokens
                          if "/" in t or t.startswith(".")]  # fmt: skip
            want_file = True
        else:
            continue
        for cand in candidates:
            rel = os.path.relpath(cand, cwd)
            if rel in (".", ".git") or rel.startswith(("..", ".git/")):
                continue
            path = cwd / rel
            if key == "core.hookspath" and not path.exists() and guards.inside(rel):
                # Git would read hooks there once it exists: the agent must
                # not be the one to create it.
                subprocess.run(["mkdir", "-p", "--", str(path)], check=True, cwd="/",
                               **owner.run_kwargs())  # type: ignore[arg-type]  # fmt: skip
            if path.is_symlink() or (path.is_file() if want_file else path.exists()):
                guards.guard(rel)
                found.append(rel)
    return found


def nested_git_entries(cwd: Path, limit: int = 200_000) -> list[str]:
    """``.git`` entries below the top level (nested repositories, gitfiles)."""
    out: list[str] = []
    for seen, (root, dirs, files) in enumerate(os.walk(cwd)):
        if seen >= limit:
            break
        here = Path(root)
        if here == cwd and ".git" in dirs:
            dirs.remove(".git")
        elif ".git" in dirs or ".git" in files:
            out.append(str((here / ".git").relative_to(cwd)))
            if ".git" in dirs:
                dirs.remove(".git")
    return sorted(out)


def new_nested_git(ws: WorkspaceGit) -> list[str]:
    """Nested ``.git`` entries the agent created: a later ``git submodule
    add`` or a gitlink would make the operator's git read their config."""
    return sorted(set(nested_git_entries(ws.cwd)) - ws.nested_at_launch)
