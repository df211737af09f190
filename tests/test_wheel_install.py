"""The user's install: wheels built from the repository, installed into a
fresh virtual environment that cannot see the source tree, then ``doctor``
and the demo bottle run from there (what README "Install" promises); each
built-in plugin installed alone is discovered; every wheel ships its
``py.typed`` marker and the LICENSE.

Dependencies come from the package index like a user's install; the
project's own distributions come only from the wheels built here (given as
files, so an index can never substitute a same-named distribution). The
one-plugin environments install with ``--offline``: their third-party
dependencies are the workspace's, already in uv's cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO

if TYPE_CHECKING:
    import docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
#: What ``bot-bottle-all`` installs: every built-in.
DISTRIBUTIONS = {
    "bot_bottle", "bot_bottle_all", "bot_bottle_claude", "bot_bottle_codex", "bot_bottle_dlp",
    "bot_bottle_docker", "bot_bottle_shell", "bot_bottle_sidecars", "bot_bottle_console",
    "bot_bottle_gitea", "bot_bottle_github", "bot_bottle_gitlab",
}  # fmt: skip
#: Built by the workspace but optional: not part of the user's install.
#: apple_container: macOS only (its README says why it is not in bot-bottle-all);
#: smolmachines: needs the smolvm CLI and hardware KVM (or macOS);
#: kubernetes: needs a cluster (and has never met a real one).
OPTIONAL = {"bot_bottle_kingfisher", "bot_bottle_apple_container", "bot_bottle_smolmachines",
            "bot_bottle_kubernetes"}  # fmt: skip
#: Built by the workspace for its own tests only (the dev group's kits).
DEV = {"bot_bottle_testkit"}
#: What ``plugins list --json`` shows for each built-in plugin installed alone.
PLUGIN_COMPONENTS = {
    "claude": {"agent_providers": ["claude"]},
    "codex": {"agent_providers": ["codex"]},
    "dlp": {
        "dlp_accelerators": ["native_runs"],
        "dlp_detectors": ["token_patterns", "known_secrets", "prompt_injection"],
    },
    "docker": {"backends": ["docker"], "freezers": ["docker"]},
    "apple_container": {"backends": ["apple_container"]},
    "gitea": {"key_provisioners": ["gitea"]},
    "github": {"key_provisioners": ["github"]},
    "gitlab": {"key_provisioners": ["gitlab"]},
    "kingfisher": {"dlp_detectors": ["kingfisher"]},
    "kubernetes": {"backends": ["kubernetes"], "freezers": ["kubernetes"]},
    "shell": {"agent_providers": ["shell"]},
    "smolmachines": {"backends": ["smolmachines"], "freezers": ["smolmachines"]},
}


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        # scripts/setup.sh may have installed it as a module only (pip install uv).
        probe = subprocess.run(
            ["python3", "-c", "import uv; print(uv.find_uv_bin())"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        uv = probe.stdout.strip() if probe.returncode == 0 else None
    if not uv:
        pytest.fail("uv is required to build the wheels (scripts/setup.sh installs it)")
    return uv


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{argv[:4]} exited {proc.returncode}: {proc.stderr[-3000:]}"
    return proc


def _clean_env(home: Path) -> dict[str, str]:
    """The environment of a user's shell: nothing pointing at the source tree."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    env["BOT_BOTTLE_HOME"] = str(home)
    return env


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every workspace distribution's wheel, built once per session."""
    out = tmp_path_factory.mktemp("wheels")
    _run([_uv(), "build", "--all-packages", "--wheel", "-q", "-o", str(out)], cwd=REPO)
    return out


def _dist(wheel: Path) -> str:
    return wheel.name.split("-")[0]


def test_the_workspace_builds_one_wheel_per_distribution(wheels: Path) -> None:
    assert {_dist(p) for p in wheels.glob("*.whl")} == DISTRIBUTIONS | OPTIONAL | DEV


def test_every_wheel_ships_py_typed_and_the_license(wheels: Path) -> None:
    import zipfile

    license_text = (REPO / "LICENSE").read_bytes()
    assert b"Apache License" in license_text and b"Version 2.0" in license_text
    for wheel in sorted(wheels.glob("*.whl")):
        dist = _dist(wheel)
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
            metadata = zf.read(f"{info}/METADATA").decode()
            assert zf.read(f"{info}/licenses/LICENSE") == license_text, dist
        assert "License-Expression: Apache-2.0" in metadata.splitlines(), dist
        assert "License-File: LICENSE" in metadata.splitlines(), dist
        if dist != "bot_bottle_all":  # a metapackage: no code to type
            assert f"{dist}/py.typed" in names, dist
        if dist not in DEV:
            # The test kits stay out of what users and the bundle image install.
            assert not any("testkit" in n or (n.endswith("/testing.py") and
                           not n.startswith("bot_bottle/")) for n in names), dist  # fmt: skip


def test_every_built_in_plugin_is_covered_by_the_discovery_test() -> None:
    """A plugin added under plugins/ must get a row in PLUGIN_COMPONENTS."""
    declared = {}
    for pyproject in sorted(REPO.glob("plugins/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for name in project.get("entry-points", {}).get("bot_bottle", {}):
            declared[name] = project["name"]
    assert set(declared) == set(PLUGIN_COMPONENTS)
    assert all(dist == _dist_name(name) for name, dist in declared.items())


def _dist_name(plugin: str) -> str:
    # An entry point is a Python name (apple_container), a distribution is dashed.
    return f"bot-bottle-{plugin}".replace("_", "-")


def _in_dev_env(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(dist)
    except PackageNotFoundError:
        return False
    return True


def _venv_with(wheels: Path, where: Path, *dists: str) -> Path:
    """A fresh venv holding ``dists`` (and what they depend on) from ``wheels``.

    Offline (uv's cache only, no index asked) when the workspace's own
    environment has them, so their dependencies were cached by ``uv sync``;
    an optional plugin the workspace does not install (kingfisher) gets its
    dependencies from the index, as a user's install would."""
    uv = _uv()
    offline = all(_in_dev_env(d.replace("_", "-")) for d in dists)
    venv = where / "venv"
    _run([uv, "venv", "-q", "--python", sys.executable, str(venv)], cwd=where)
    python = venv / "bin" / "python"
    files = [str(w) for w in wheels.glob("*.whl") if _dist(w) in dists]
    assert len(files) == len(dists), (dists, files)
    # --find-links: a dependency on another of ours (docker -> sidecars) comes
    # from the wheels built here too.
    _run(
        [uv, "pip", "install", "-q", *(["--offline"] if offline else []),
         "--python", str(python), "--find-links", str(wheels), *files],
        cwd=where,
    )  # fmt: skip
    return venv


@pytest.mark.parametrize("plugin", sorted(PLUGIN_COMPONENTS))
def test_a_built_in_plugin_installed_alone_is_discovered(
    plugin: str, wheels: Path, tmp_path: Path
) -> None:
    venv = _venv_with(wheels, tmp_path, f"bot_bottle_{plugin}")
    installed = _run(
        [_uv(), "pip", "list", "--format", "json", "--python", str(venv / "bin" / "python")],
        cwd=tmp_path,
    )
    ours = {p["name"] for p in json.loads(installed.stdout) if p["name"].startswith("bot-bottle")}
    # Backends' launches build the bundle image; smolmachines runs the Docker backend's bundle.
    needs = {
        "docker": {"bot-bottle-sidecars"},
        "apple_container": {"bot-bottle-sidecars"},
        "smolmachines": {"bot-bottle-sidecars", "bot-bottle-docker"},
        "kubernetes": {"bot-bottle-sidecars", "bot-bottle-docker"},
    }
    assert ours == {"bot-bottle", _dist_name(plugin)} | needs.get(plugin, set())

    listed = _run(
        [str(venv / "bin" / "bot-bottle"), "plugins", "list", "--json"],
        cwd=tmp_path, env=_clean_env(tmp_path / "home"),
    )  # fmt: skip
    (entry,) = [p for p in json.loads(listed.stdout)["plugins"] if p["name"] == plugin]
    assert entry["name"] == plugin
    assert entry["distribution"] == _dist_name(plugin)
    assert entry["source"] == "entry point"
    assert entry["status"] == "active", entry["error"]
    assert entry["components"] == PLUGIN_COMPONENTS[plugin]


def test_the_console_installed_alone_gives_supervise(wheels: Path, tmp_path: Path) -> None:
    """The console has no hooks: core's ``supervise`` command imports it."""
    venv = _venv_with(wheels, tmp_path, "bot_bottle_console")
    env = _clean_env(tmp_path / "home")
    bb = str(venv / "bin" / "bot-bottle")
    listed = _run([bb, "plugins", "list", "--json"], cwd=tmp_path, env=env)
    assert json.loads(listed.stdout)["plugins"] == []
    _run([str(venv / "bin" / "python"), "-c", "import bot_bottle_console.app"], env=env)
    helped = _run([bb, "supervise", "--help"], cwd=tmp_path, env=env)
    assert "supervise" in helped.stdout


@pytest.mark.docker
def test_wheels_install_into_a_clean_venv_and_run_doctor_and_the_demo(
    wheels: Path, tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> None:
    uv = _uv()

    venv = tmp_path / "venv"
    _run([uv, "venv", "-q", "--python", sys.executable, str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            str(python),
            *(str(w) for w in wheels.glob("*.whl") if w.name.split("-")[0] in DISTRIBUTIONS),
        ],
        cwd=tmp_path,
    )

    # Nothing of the source tree leaks in: a clean environment, run elsewhere.
    env = _clean_env(tmp_path / "home")
    # uv beside the user's bot-bottle, as 'uv tool install' leaves it: the
    # bundle build fetches the image's dependencies with it (the venv has no pip).
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", ""), str(Path(uv).parent)])
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    where = _run(
        [str(python), "-c", "import bot_bottle, bot_bottle_sidecars.bundle as b;"
         "print(bot_bottle.__file__); print(b.dockerfile())"],
        cwd=tmp_path, env=env,
    ).stdout.split()  # fmt: skip
    site = str(venv / "lib")
    assert all(p.startswith(site) for p in where), where
    assert not any(p.startswith(str(REPO)) for p in where)

    bb = str(venv / "bin" / "bot-bottle")
    doctor = subprocess.run(
        [bb, "doctor", "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, check=False
    )
    report = json.loads(doctor.stdout)
    failed = [c for c in report["checks"] if c["level"] == "FAIL"]
    assert doctor.returncode == 0 and not failed, failed
    whats = {c["what"] for c in report["checks"]}
    assert {"python", "docker", "base image", "backend docker", "agent provider shell"} <= whats

    _run([bb, "init"], cwd=tmp_path, env=env)
    demo = _run(
        [bb, "run", "demo", "--", "sh", "-c",
         "curl -sS http://_egress.local/routes; curl -sS https://not-on-the-allowlist.test/"],
        cwd=tmp_path, env=env, timeout=900,
    )  # fmt: skip
    assert '"routes"' in demo.stdout
    assert "bot-bottle egress refused this request" in demo.stdout
    assert "host-not-allowed" in demo.stdout


def test_the_dlp_wheel_is_repacked_for_the_image_with_or_without_its_c_run_finder(
    wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A user's install (not editable) of bot-bottle-dlp carries the compiled
    # run finder; the bundle image is made from the installed files.
    import zipfile
    from importlib.metadata import distributions

    from bot_bottle import imagebuild
    from bot_bottle.imagebuild import ImageBuildError, InstalledDist, Target, repack_installed

    wheel = next(wheels.glob("bot_bottle_dlp-*.whl"))
    assert "-manylinux_" in wheel.name, wheel.name  # built with its C run finder
    site = tmp_path / "site"
    _run([_uv(), "pip", "install", "-q", "--no-deps", "--python", sys.executable,
          "--target", str(site), str(wheel)])  # fmt: skip
    dist = next(d for d in distributions(path=[str(site)]) if d.name == "bot-bottle-dlp")
    installed = InstalledDist(dist.name, dist.version, None, dist)

    def repacked(target: Target) -> tuple[str, set[str], str]:
        out = tmp_path / target.python_version
        out.mkdir(exist_ok=True)
        path = repack_installed(installed, out, target)
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            meta = zf.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
        return path.name, names, meta

    # The image's Python is the host's: the wheel keeps its tag and the C.
    name, names, meta = repacked(Target())
    assert name.endswith(wheel.name.split("-", 2)[2]), name
    assert any(n.startswith("bot_bottle_dlp/_runs.") and n.endswith(".so") for n in names)
    # Another Python: the optional extension is left out, the wheel is pure.
    name, names, meta = repacked(Target(python_version="3.12"))
    assert name.endswith("-py3-none-any.whl"), name
    assert not any(n.endswith(".so") for n in names)
    assert "bot_bottle_dlp/token_patterns.py" in names
    assert "Root-Is-Purelib: true" in meta and "Tag: py3-none-any" in meta
    # A compiled module not declared optional is refused, as before.
    monkeypatch.setattr(imagebuild, "_optional_extensions", lambda _dist: set())
    with pytest.raises(ImageBuildError, match="does not fit the image"):
        repacked(Target(python_version="3.12"))


def test_without_a_compiler_the_dlp_wheel_builds_without_its_c_run_finder(
    tmp_path: Path,
) -> None:
    # The extension is optional: where gcc is missing the build warns and the
    # package installs pure (the views find their runs in Python).
    import shutil as sh
    import zipfile
    from importlib.metadata import distributions

    from bot_bottle.imagebuild import InstalledDist, Target, repack_installed

    src = tmp_path / "dlp"
    sh.copytree(REPO / "plugins/dlp", src, ignore=sh.ignore_patterns("build", "*.so", "*.egg-info"))
    out = tmp_path / "out"
    env = {**os.environ, "CC": "/bin/false"}
    proc = _run([_uv(), "build", "--wheel", "--python", sys.executable, "-o", str(out), str(src)],
                env=env)  # fmt: skip
    assert 'building extension "bot_bottle_dlp._runs" failed' in proc.stderr + proc.stdout
    wheel = next(out.glob("bot_bottle_dlp-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        assert not any(n.endswith(".so") for n in zf.namelist())
    site = tmp_path / "site"
    _run([_uv(), "pip", "install", "-q", "--no-deps", "--python", sys.executable,
          "--target", str(site), str(wheel)])  # fmt: skip
    dist = next(d for d in distributions(path=[str(site)]) if d.name == "bot-bottle-dlp")
    installed = InstalledDist(dist.name, dist.version, None, dist)
    (tmp_path / "image").mkdir()
    repacked = repack_installed(installed, tmp_path / "image", Target(python_version="3.12"))
    assert repacked.name.endswith("-py3-none-any.whl")
    probe = _run(
        [sys.executable, "-c",
         "from bot_bottle_dlp.native import NativeRunFinder as F; print(F().is_available())"],
        env={**os.environ, "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert "not built" in probe.stdout


def test_a_dlp_wheel_built_from_source_for_another_host_goes_into_the_image_pure(
    wheels: Path, tmp_path: Path
) -> None:
    # A source checkout's wheel is compiled for the host: a macOS host, a
    # host Python other than the image's, or a glibc newer than the image's
    # would give the image's pip a wheel it refuses (the bundle build failed).
    # The optional C run finder is left out instead: the image scans the
    # same, in Python.
    import zipfile

    from bot_bottle.imagebuild import ImageBuildError, Target, fit_built_wheel

    built = next(wheels.glob("bot_bottle_dlp-*.whl"))
    assert "-manylinux_" in built.name, built.name

    def fitted(target: Target, plat: str | None = None) -> tuple[str, set[str], str]:
        out = tmp_path / f"{target.python_version}-{target.glibc[1]}-{plat}"
        out.mkdir()
        name = built.name
        if plat is not None:
            name = "-".join([*name[: -len(".whl")].split("-")[:-1], plat]) + ".whl"
        wheel = fit_built_wheel(Path(shutil.copy(built, out / name)), target)
        assert sorted(p.name for p in out.iterdir()) == [wheel.name]  # the original replaced
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            meta = zf.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
        return wheel.name, names, meta

    # The image's Python and a glibc at least the host's: kept as built, with the C.
    name, names, _ = fitted(Target())
    assert name == built.name
    assert any(n.endswith(".so") for n in names)
    for target, plat in [
        (Target(python_version="3.12"), None),  # another Python
        (Target(glibc=(2, 28)), None),  # an image older than the host's glibc
        (Target(), "macosx_14_0_arm64"),  # a Mac's build
    ]:
        name, names, meta = fitted(target, plat)
        assert name.endswith("-py3-none-any.whl"), name
        assert not any(n.endswith(".so") for n in names), name
        assert {"bot_bottle_dlp/token_patterns.py", "bot_bottle_dlp/native.py"} <= names
        assert "Root-Is-Purelib: true" in meta and "Tag: py3-none-any" in meta
    # The pure wheel installs, and the plugin says it finds its runs in Python.
    site = tmp_path / "site"
    _run([_uv(), "pip", "install", "-q", "--no-deps", "--python", sys.executable,
          "--target", str(site), str(next((tmp_path / "3.13-28-None").glob("*.whl")))])  # fmt: skip
    probe = subprocess.run(
        [sys.executable, "-c", "import bot_bottle_dlp.native as n; "
         "print(n.__file__, n.NativeRunFinder().is_available().detail)"],
        env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.startswith(str(site)) and "not built" in probe.stdout, probe.stdout
    # A compiled module nobody declared optional is refused in words.
    other = tmp_path / "other"
    other.mkdir()
    bad = other / "bot_bottle_x-1.0-cp313-cp313-macosx_14_0_arm64.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("bot_bottle_x/_c.cpython-313-darwin.so", b"\0")
        zf.writestr("bot_bottle_x-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    with pytest.raises(ImageBuildError, match="compiled modules are not optional"):
        fit_built_wheel(bad, Target())
