"""Files in the working tree that the host repository's own config makes
git read as config or run as hooks: read-only in the bottle.

The host's ``.git`` is out of the agent's reach, but its config can point
back into the shared working tree: ``core.hooksPath = .husky`` (husky),
``include.path = ../.gitconfig`` (a config shared through the repository), a
hook in ``.git/hooks`` that is a symbolic link to a tracked script. The agent
rewriting any of them gets its code run by the operator's next ``git
commit`` or ``git status``. Each such file or directory is mounted read-only
over itself, and every directory between it and the top level is pinned as
a mountpoint (a mountpoint cannot be renamed), so it cannot be moved aside
and replaced either. A path that reaches the file through a symbolic link
inside the working tree cannot be protected (the agent can re-point the
link): the launch refuses it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from bot_bottle_sidecars.launch.bring_back import Owner
from bot_bottle_sidecars.launch.bring_back import clean_env as _clean_env
from bot_bottle_sidecars.launch.bring_back import git as _git

from bot_bottle.errors import BotBottleError
from bot_bottle.termtext import visible
from bot_bottle_docker.nested_git import head_entry
from bot_bottle_docker.workspace_git import WORKSPACE


def _owner_home(owner: Owner) -> str:
    """Where the owner's global config is (a uid with no account has none)."""
    import pwd

    try:
        return pwd.getpwuid(owner.uid).pw_dir
    except KeyError:
        return "/nonexistent"


def _owner_env(cwd: Path, owner: Owner) -> dict[str, str]:
    """The environment the owner's own git reads its config in: their
    ``~/.gitconfig`` (and ``$XDG_CONFIG_HOME/git/config`` under their home)
    and the system's, as ``git config`` (which runs no program) sees them."""
    env = {k: v for k, v in _clean_env().items() if k not in ("GIT_CONFIG_NOSYSTEM",
                                                               "GIT_CONFIG_GLOBAL")}  # fmt: skip
    env.pop("XDG_CONFIG_HOME", None)
    env.update(HOME=_owner_home(owner), GIT_WORK_TREE=str(cwd))
    return env


def trusted_everywhere(cwd: Path, host_git: Path | None, owner: Owner) -> list[str]:
    """The owner's ``safe.directory`` values that turn git's ownership check
    off somewhere in the tree (``*``, a ``prefix/*`` above or in it, a
    directory in it): there, a git dir the agent makes is not refused while
    the bottle runs."""
    env = _owner_env(cwd, owner)
    env.pop("GIT_WORK_TREE", None)
    out: list[str] = []
    top = os.path.normpath(cwd)
    for scope in ("--global", "--system"):
        values = _git(["config", scope, "--get-all", "safe.directory"],
                      git_dir=host_git or Path("/nonexistent"), owner=owner, env=env,
                      check=False).stdout.decode("utf-8", "replace").split("\n")  # fmt: skip
        for value in (v.strip() for v in values):
            if not value:
                continue
            if value == "*":
                out.append(value)
                continue
            path = os.path.normpath(value[:-2] if value.endswith("/*") else value)
            under = path == top or path.startswith(top + "/")
            if under or (value.endswith("/*") and (top + "/").startswith(path + "/")):
                out.append(value)
    return out


def _read_by_owner_config(cwd: Path, host_git: Path, owner: Owner) -> list[Path]:
    """Paths in the owner's global and system config (and the files they
    include) that git reads or runs: included files, include paths whatever
    their condition, and the files program-valued keys name (an alias or a
    filter that is a script of the repository). Values of other keys are not
    taken for paths (``init.defaultBranch = main`` names no file)."""
    from bot_bottle_docker.workspace_git import _PROGRAM_KEY

    env = _owner_env(cwd, owner)
    out: list[Path] = []
    for scope in ("--global", "--system"):
        listing = _git(["config", scope, "--includes", "--list", "--show-origin", "-z"],
                       git_dir=host_git, owner=owner, env=env, check=False).stdout  # fmt: skip
        fields = listing.split(b"\0")
        for origin, entry in zip(fields[0::2], fields[1::2], strict=False):
            if origin.startswith(b"file:"):
                out.append(Path("/", os.fsdecode(origin[5:])))
            key, _, value = os.fsdecode(entry).partition("\n")
            key = key.lower()
            if _PROGRAM_KEY.match(key) and (not key.startswith("alias.") or value.startswith("!")):
                out.extend(_files_named(cwd, value))
        named = _git(["config", scope, "--includes", "--show-origin", "-z", "--type=path",
                      "--get-regexp", r"^include(if\..*)?\.path$"],
                     git_dir=host_git, owner=owner, env=env, check=False).stdout  # fmt: skip
        items = named.split(b"\0")
        for origin, entry in zip(items[0::2], items[1::2], strict=False):
            value = os.fsdecode(entry.partition(b"\n")[2])
            if origin.startswith(b"file:") and value:
                out.append(Path("/", os.fsdecode(origin[5:])).parent / value)
    return out


def _hooks_dir(cwd: Path, host_git: Path, owner: Owner) -> Path:
    """The hooks directory the owner's git uses (``core.hooksPath`` from any
    of their config files; relative: from the top level, where hooks run)."""
    hooks_path = _git(["config", "--includes", "--type=path", "--get", "core.hooksPath"],
                      git_dir=host_git, owner=owner, env=_owner_env(cwd, owner),
                      check=False).stdout.decode().strip()  # fmt: skip
    return (cwd / hooks_path) if hooks_path else host_git / "hooks"


def _read_by_host_git(cwd: Path, host_git: Path, owner: Owner) -> list[Path]:
    """Paths (absolute, not resolved) the host's git reads or runs, as its
    config names them: included config files, files named in config values
    (scripts of filters, aliases...), the hooks directory and each hook."""
    env = {**_clean_env(), "GIT_WORK_TREE": str(cwd)}
    listing = _git(["config", "--local", "--includes", "--list", "--show-origin", "-z"],
                   git_dir=host_git, owner=owner, env=env, check=False).stdout  # fmt: skip
    fields = listing.split(b"\0")
    out: list[Path] = []
    for origin in fields[0::2]:
        if origin.startswith(b"file:"):
            out.append(Path("/", os.fsdecode(origin[5:])))
    # A command the config names may be a script in the working tree
    # (filter.x.clean = ./tools/clean.sh, alias.x = !scripts/x): each word
    # of each value that is a file there.
    for entry in fields[1::2]:
        out.extend(_files_named(cwd, os.fsdecode(entry.partition(b"\n")[2])))
    # Includes as named, whether the file exists or not (the agent could
    # create a missing one), whatever their includeIf condition.
    named = _git(["config", "--local", "--includes", "--show-origin", "-z", "--type=path",
                  "--get-regexp", r"^include(if\..*)?\.path$"],
                 git_dir=host_git, owner=owner, env=env, check=False).stdout  # fmt: skip
    items = named.split(b"\0")
    for origin, entry in zip(items[0::2], items[1::2], strict=False):
        value = os.fsdecode(entry.partition(b"\n")[2])
        if origin.startswith(b"file:") and value:
            base = Path("/", os.fsdecode(origin[5:])).parent
            out.append(base / value)
    out.extend(_read_by_owner_config(cwd, host_git, owner))
    hooks = _hooks_dir(cwd, host_git, owner)
    out.append(hooks)
    if hooks.name == "_":
        # husky 9: core.hooksPath = .husky/_, whose wrappers run the user's
        # scripts one level up (.husky/pre-commit).
        out.append(hooks.parent)
    # Each hook as git opens it (a link in .git/hooks to a tracked script).
    if hooks.is_dir():
        out.extend(hooks / entry.name for entry in hooks.iterdir())
    return out


def _files_named(cwd: Path, value: str) -> list[Path]:
    try:
        words = shlex.split(value)
    except ValueError:
        words = value.split()
    out: list[Path] = []
    for word in words:
        for cand in (word.lstrip("!"), word.partition("=")[2]):
            if not cand or cand.startswith(("-", "~")):
                continue
            path = Path(cand) if cand.startswith("/") else cwd / cand
            with contextlib.suppress(OSError):
                if path.is_file():
                    out.append(path)
    return out


def _resolve(path: Path, top: Path, dot_git: Path) -> tuple[Path, list[Path]]:
    """``path`` resolved the way the kernel does, and the symbolic links met
    on the way that lie in the working tree (the agent can re-point those)."""
    links: list[Path] = []
    pending = list(path.parts[1:])
    cur, hops = Path("/"), 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            cur = cur.parent
            continue
        nxt = cur / part
        if not nxt.is_symlink():
            cur = nxt
            continue
        hops += 1
        if hops > 40:
            raise BotBottleError(f"too many links resolving {visible(str(path))}")
        if nxt.is_relative_to(top) and not nxt.is_relative_to(dot_git):
            links.append(nxt)
        target = nxt.readlink()
        if target.is_absolute():
            cur = Path("/")
        pending = [*(target.parts[1:] if target.is_absolute() else target.parts), *pending]
    return cur, links


def guards(cwd: Path, host_git: Path, owner: Owner) -> list[tuple[Path, str, str]]:
    """``(host path, container path, mode)`` mounts: each working-tree path
    the host's git reads as config or code ``ro``, its parents ``rw``
    (pinned)."""
    top = cwd.resolve()
    dot_git = top / ".git"
    out: dict[Path, tuple[Path, str, str]] = {}
    for raw in _read_by_host_git(cwd, host_git, owner):
        real, links = _resolve(raw, top, dot_git)
        if not real.is_relative_to(top) or real.is_relative_to(dot_git):
            continue
        if links:
            raise BotBottleError(
                f"the repository's git reads {visible(str(raw))} through the link "
                f"{visible(str(links[0]))} in the working tree, which the agent could re-point",
                hint="replace the link with the file or directory, or run without --cwd",
            )
        if not real.exists():
            raise BotBottleError(
                f"the repository's git config names {visible(str(raw))}, which does not "
                "exist: the agent could create it, and the operator's git would read it",
                hint="create it (empty is fine) or remove it from the git config that names it",
            )
        rel = real.relative_to(top)
        for parent in list(reversed(rel.parents))[1:]:
            out.setdefault(top / parent, (top / parent, f"{WORKSPACE}/{parent}", "rw"))
        out[real] = (real, f"{WORKSPACE}/{rel}", "ro")
    return sorted(out.values(), key=lambda m: m[1])


#: What git reads in a git dir, lower-cased.
_GIT_DIR_ENTRIES = frozenset(
    {"head", "config", "config.worktree", "commondir", "objects", "refs", "hooks", "info"}
)


def branch_problems(repo: Path, tip: str, protected: Sequence[str]) -> list[str]:
    """Why a branch brought back from the bottle must not land: its new
    commits change a protected path (checking the branch out would put the
    agent's hook where ``post-checkout`` runs it), or its tree lays a
    directory out as a git dir (``cd`` into it and git reads its config)."""
    problems: list[str] = []
    out = _git(["log", "--format=", "--name-only", "-z", "-m", "--no-renames", tip,
                "--not", "--all"], git_dir=repo).stdout  # fmt: skip
    changed = sorted({os.fsdecode(r) for r in out.replace(b"\n", b"\0").split(b"\0")} - {""})
    for path in changed:
        if any(path == p or path.startswith(f"{p}/") for p in protected):
            problems.append(f"it changes {path}, which the repository's git config runs or reads")
    listing = _git(["ls-tree", "-r", "-z", "--name-only", tip], git_dir=repo).stdout
    children: dict[str, set[str]] = {}
    for raw in listing.split(b"\0"):
        parts = os.fsdecode(raw).split("/") if raw else []
        for i in range(len(parts)):
            children.setdefault("/".join(parts[:i]), set()).add(parts[i])
    for directory, names in sorted(children.items()):
        if not head_entry(names):
            continue
        # Only a layout the agent's commits made or changed (a repository
        # may keep git dirs as test data).
        prefix = f"{directory}/" if directory else ""
        touched = {p[len(prefix) :].split("/")[0].lower() for p in changed if p.startswith(prefix)}
        if touched & _GIT_DIR_ENTRIES:
            problems.append(f"{directory or 'its top level'} is laid out as a git directory")
    return problems


def active_hooks(cwd: Path, host_git: Path, owner: Owner) -> list[str]:
    """The repository's hooks that git runs (executable, not samples). What
    they read from the working tree (a ``.pre-commit-config.yaml``, a
    Makefile, ``package.json`` scripts) the agent can change: no mount can
    tell which files those are, so the operator is told."""
    hooks = _hooks_dir(cwd, host_git, owner)
    out: list[str] = []
    with contextlib.suppress(OSError):
        for entry in sorted(hooks.iterdir()):
            if entry.suffix != ".sample" and entry.is_file() and os.access(entry, os.X_OK):
                out.append(entry.name)
    return out
