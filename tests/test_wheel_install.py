"""The user's install: wheels built from the repository, installed into a
fresh virtual environment that cannot see the source tree, then ``doctor``
and the demo bottle run from there (what README "Install" promises).

Dependencies come from the package index like a user's install; the
project's own distributions come only from the wheels built here (given as
files, so an index can never substitute a same-named distribution).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
#: What ``bot-bottle-all`` installs: every built-in.
DISTRIBUTIONS = {
    "bot_bottle", "bot_bottle_all", "bot_bottle_claude", "bot_bottle_codex", "bot_bottle_dlp",
    "bot_bottle_docker", "bot_bottle_shell", "bot_bottle_sidecars", "bot_bottle_console",
    "bot_bottle_gitea", "bot_bottle_github", "bot_bottle_gitlab",
}  # fmt: skip
#: Built by the workspace but optional: not part of the user's install.
OPTIONAL = {"bot_bottle_kingfisher"}


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


def test_wheels_install_into_a_clean_venv_and_run_doctor_and_the_demo(
    tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> None:
    uv = _uv()
    wheels = tmp_path / "wheels"
    _run([uv, "build", "--all-packages", "--wheel", "-q", "-o", str(wheels)], cwd=REPO)
    built = {p.name.split("-")[0] for p in wheels.glob("*.whl")}
    assert built == DISTRIBUTIONS | OPTIONAL

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
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    env["BOT_BOTTLE_HOME"] = str(tmp_path / "home")
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
