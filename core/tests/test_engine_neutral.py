"""Core owns no engine: it plans without Docker, and its modules import no cycle.

The Docker backend (``bot_bottle_docker``) is one plugin among possible
others; core must plan a launch, show it and write nothing with no Docker
CLI on PATH and no docker SDK importable, and its own modules must form no
import cycle (a cycle is what tied the bundle layout and the plan together).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bot_bottle

CORE = Path(bot_bottle.__file__).resolve().parent

# The child blocks the docker SDK (an import of it raises ImportError) and
# runs the CLI in-process; PATH holds no docker CLI.
_CHILD = (
    "import sys; sys.modules['docker'] = None\n"
    "import shutil; assert shutil.which('docker') is None, shutil.which('docker')\n"
    "from bot_bottle.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "assert sys.modules.get('docker') is None\n"
    "sys.exit(code)\n"
)


def _bb(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True,
        env=env, cwd=cwd, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def no_docker_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "BOT_BOTTLE_"))}
    env.update(
        PATH=str(empty),
        HOME=str(tmp_path / "user"),
        BOT_BOTTLE_HOME=str(tmp_path / "home"),
        # Nothing answers here: a probe of the engine finds it unreachable.
        DOCKER_HOST=f"unix://{tmp_path / 'no-engine.sock'}",
    )
    work = tmp_path / "work"
    work.mkdir()
    r = _bb("init", env=env, cwd=work)
    assert r.returncode == 0, r.stderr
    return env, work


def test_a_launch_is_planned_with_no_docker_cli_and_no_docker_sdk(
    no_docker_env: tuple[dict[str, str], Path],
) -> None:
    env, work = no_docker_env
    r = _bb("start", "--dry-run", "--json", "demo", env=env, cwd=work)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["plan"]["agent"] == "demo" and doc["plan"]["backend"] == "docker"
    assert doc["plan"]["agent_image"] == "(built at launch)"
    assert doc["backend"]["workdir"] == "/home/agent"
    # The human preflight asks the engine about gVisor and says it is unreachable.
    r = _bb("start", "--dry-run", "demo", env=env, cwd=work)
    assert r.returncode == 0, r.stderr
    assert "bottle demo-" in r.stderr and "gvisor: unknown (engine unreachable)" in r.stderr
    # Nothing was created: a dry run writes no state.
    assert not (Path(env["BOT_BOTTLE_HOME"]) / "state").exists() or not any(
        (Path(env["BOT_BOTTLE_HOME"]) / "state").iterdir()
    )


def test_every_core_module_imports_without_docker(
    no_docker_env: tuple[dict[str, str], Path],
) -> None:
    env, work = no_docker_env
    # A __main__ module runs the CLI when imported: not a library module.
    names = sorted(m for m in _modules() if not m.endswith("__main__"))
    code = (
        "import importlib, sys; sys.modules['docker'] = None\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(len(sys.modules))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=work,
        timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def _modules() -> dict[str, Path]:
    out = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> dict[str, set[str]]:
    """module -> core modules it imports, at module level or inside a
    function alike (a lazy import is still a dependency); imports for type
    checkers only are not."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]

        def resolve(name: str) -> str | None:
            while name and name not in mods:
                name = name.rpartition(".")[0]
            return name or None

        def visit(body: list[ast.stmt], mod: str = mod, package: str = package) -> None:
            for node in body:
                if isinstance(node, ast.If) and _is_type_checking(node):
                    visit(node.orelse)
                    continue
                targets: list[str] = []
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        keep = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join([*keep, base] if base else keep)
                    targets = [base, *(f"{base}.{a.name}" for a in node.names)]
                for target in targets:
                    found = resolve(target)
                    if found and found != mod:
                        graph[mod].add(found)
                for field in ("body", "orelse", "finalbody", "handlers"):
                    sub = getattr(node, field, None)
                    if isinstance(sub, list):
                        visit([s for s in sub if isinstance(s, ast.stmt | ast.ExceptHandler)])  # type: ignore[misc]

        tree = ast.parse(path.read_text(encoding="utf-8"))
        visit(tree.body)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_core_has_no_import_cycle() -> None:
    graph = import_graph()
    assert graph.get("bot_bottle.plan"), "the graph found no imports"
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


#: The only strings in core's code (not its docstrings or comments) that name
#: Docker: the default backend's name, and help text pointing at its plugin.
_ALLOWED = {
    ("contracts/backend.py", "docker"),
    ("cli/doctor.py", "check Python, Docker, plugins and the state directory"),
    ("cli/doctor.py", "install one, e.g. 'pip install bot-bottle-docker'"),
}
# "Dockerfile" is the build-file format every OCI builder reads, not the engine.
_DOCKER = re.compile(r"docker(?!file)", re.IGNORECASE)


def test_core_code_names_no_docker_engine() -> None:
    """Identifiers, imports and strings of core's code: docstrings and
    comments may mention Docker, code may not (but for :data:`_ALLOWED`)."""
    found = []
    for path in sorted(CORE.rglob("*.py")):
        rel = str(path.relative_to(CORE))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            texts: list[str] = []
            if isinstance(node, ast.Name):
                texts = [node.id]
            elif isinstance(node, ast.Attribute):
                texts = [node.attr]
            elif isinstance(node, ast.alias):
                texts = [node.name, node.asname or ""]
            elif isinstance(node, ast.ImportFrom):
                texts = [node.module or ""]
            elif isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                texts = [node.name]
            elif isinstance(node, ast.arg):
                texts = [node.arg]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) in docstrings or (rel, node.value) in _ALLOWED:
                    continue
                texts = [node.value]
            found += [
                f"{rel}:{getattr(node, 'lineno', '?')}: {t!r}" for t in texts if _DOCKER.search(t)
            ]
    assert found == []
