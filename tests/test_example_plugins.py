"""Third-party plugins, installed for real into a throwaway virtualenv.

Builds the example plugin distributions under examples/plugins/ and core,
installs them into a fresh venv, and runs that venv's ``bot-bottle`` the
way a user who ran ``pip install bot-bottle-example-acme`` would.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, uv: str) -> Path:
    root = tmp_path_factory.mktemp("plugin-venv")
    venv = root / "venv"
    r = run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    assert r.returncode == 0, r.stderr
    r = run(
        [
            uv, "pip", "install", "--quiet", "--python", str(venv / "bin/python"),
            str(REPO / "core"),
            str(REPO / "plugins/dlp"),
            str(REPO / "examples/plugins/acme-detector"),
            str(REPO / "examples/plugins/broken"),
        ]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return venv


def _bb(venv: Path, home: Path, *args: str, **env: str):
    full = {k: v for k, v in os.environ.items() if not k.startswith("BOT_BOTTLE_")}
    full.update(BOT_BOTTLE_HOME=str(home), **env)
    return run([str(venv / "bin/bot-bottle"), *args], env=full)


def _plugins(venv: Path, home: Path, **env: str) -> dict[str, dict]:
    r = _bb(venv, home, "plugins", "list", "--json", **env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return {p["name"]: p for p in json.loads(r.stdout)["plugins"]}


def test_installed_plugin_is_listed_with_its_hooks(venv: Path, tmp_path: Path) -> None:
    acme = _plugins(venv, tmp_path)["acme"]
    assert acme["distribution"] == "bot-bottle-example-acme"
    assert acme["version"] == "0.1.0"
    assert acme["source"] == "entry point"
    assert acme["status"] == "active"
    assert acme["hooks"] == ["register_dlp_detectors"]
    assert acme["components"] == {"dlp_detectors": ["acme_tokens"]}


def test_broken_plugin_is_listed_with_its_error(venv: Path, tmp_path: Path) -> None:
    broken = _plugins(venv, tmp_path)["broken"]
    assert broken["status"] == "failed"
    assert "missing libacme.so" in broken["error"]
    assert broken["distribution"] == "bot-bottle-example-broken"


def test_table_output_names_the_broken_plugin(venv: Path, tmp_path: Path) -> None:
    r = _bb(venv, tmp_path, "plugins", "list")
    assert r.returncode == 0
    assert "acme" in r.stdout and "dlp detectors: acme_tokens" in r.stdout
    assert "broken: import failed: RuntimeError" in r.stdout


def test_other_plugins_still_work_beside_a_broken_one(venv: Path, tmp_path: Path) -> None:
    code = (
        "from bot_bottle.plugins import PluginHost\n"
        "from bot_bottle.contracts.dlp import ScanContext, Direction, Location\n"
        "d = PluginHost().create('dlp_detectors', 'acme_tokens')\n"
        "data = b'key=acme_' + b'a1B2' * 8 + b' end'\n"
        "f, = d.scan(data, ScanContext(Direction.OUTBOUND, Location('body')))\n"
        "assert 'a1B2' not in f.snippet, f.snippet\n"
        "print(f.rule, f.location.offset)\n"
    )
    env = {"BOT_BOTTLE_HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    r = run([str(venv / "bin/python"), "-c", code], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["acme-api-token", "4"]


def test_contrib_drop_in_is_listed_as_contrib(venv: Path, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples/contrib/internal-hosts", tmp_path / "contrib/internal-hosts")
    plugin = _plugins(venv, tmp_path)["internal-hosts"]
    assert plugin["source"] == "contrib"
    assert plugin["status"] == "active"
    assert plugin["components"] == {"dlp_detectors": ["internal_hostnames"]}


def test_allow_list_variable_restricts_loading(venv: Path, tmp_path: Path) -> None:
    plugins = _plugins(venv, tmp_path, BOT_BOTTLE_PLUGINS="acme")
    assert plugins["acme"]["status"] == "active"
    assert plugins["broken"]["status"] == "disabled"


ACME = "acme_" + "a1B2" * 8


def test_third_party_detector_runs_in_dlp_scan_beside_the_built_ins(
    venv: Path, tmp_path: Path
) -> None:
    # Base64-encoded: found only because the pipeline decodes before detectors run.
    body = base64.b64encode(f"creds={ACME}".encode())
    full = {k: v for k, v in os.environ.items() if not k.startswith("BOT_BOTTLE_")}
    full["BOT_BOTTLE_HOME"] = str(tmp_path)
    argv = [str(venv / "bin/bot-bottle"), "dlp", "scan", "--json", "-"]
    r = run(argv, env=full, input=body.decode())
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert "acme_tokens" in doc["detectors"] and "token_patterns" in doc["detectors"]
    (finding,) = doc["findings"]
    assert (finding["detector"], finding["rule"]) == ("acme_tokens", "acme-api-token")
    assert finding["location"]["decoded"] == "base64"
    assert "a1B2" not in r.stdout


def test_third_party_detector_is_selected_by_name_in_the_pipeline(
    venv: Path, tmp_path: Path
) -> None:
    code = (
        "from bot_bottle.plugins import PluginHost\n"
        "from bot_bottle.contracts.dlp import Direction\n"
        "from bot_bottle.dlp import ScanPipeline, verdict\n"
        "p = ScanPipeline.from_host(PluginHost().load(), Direction.OUTBOUND, ['acme_tokens'])\n"
        "import gzip\n"
        f"body = gzip.compress(b'x {ACME} y')\n"
        "f = p.scan_request('POST', 'https://acme.test/', {'Content-Encoding': 'gzip'}, body)\n"
        "print(verdict(f).value, [x.name for x in p.detectors], f[0].location.offset)\n"
    )
    env = {"BOT_BOTTLE_HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    r = run([str(venv / "bin/python"), "-c", code], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["block", "['acme_tokens']", "2"]
