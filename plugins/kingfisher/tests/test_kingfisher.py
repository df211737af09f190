"""bot-bottle-kingfisher installed for real, next to core and the built-ins,
in a throwaway virtualenv (it is not part of the development install: it is
optional). Its detector registers through the same hook, is selected with
``--detector`` like any other, and finds what Kingfisher's rules find."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run

SENDGRID = "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"
GITHUB = "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"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = str(Path(sys.executable).parent / "uv")
    root = tmp_path_factory.mktemp("kingfisher-venv")
    venv = root / "venv"
    r = run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    assert r.returncode == 0, r.stderr
    r = run(
        [
            uv, "pip", "install", "--quiet", "--python", str(venv / "bin/python"),
            str(REPO / "core"), str(REPO / "plugins/dlp"), str(REPO / "plugins/kingfisher"),
        ]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return venv


def _bb(venv: Path, home: Path, *args: str, stdin: str = ""):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_BOTTLE_")}
    env.update(BOT_BOTTLE_HOME=str(home), KF_RULE_CACHE_DIR=str(venv.parent / "kf-cache"))
    return run([str(venv / "bin/bot-bottle"), *args], env=env, input=stdin, timeout=600)


def test_it_is_listed_as_an_entry_point_plugin(venv: Path, tmp_path: Path) -> None:
    r = _bb(venv, tmp_path, "plugins", "list", "--json")
    assert r.returncode == 0, r.stderr
    plugins = {p["name"]: p for p in json.loads(r.stdout)["plugins"]}
    kf = plugins["kingfisher"]
    assert (kf["distribution"], kf["status"]) == ("bot-bottle-kingfisher", "active")
    assert kf["components"] == {"dlp_detectors": ["kingfisher"]}


def test_selected_alone_it_blocks_a_token_and_names_its_rule(venv: Path, tmp_path: Path) -> None:
    body = f"SENDGRID_API_KEY={SENDGRID}\nGITHUB={GITHUB}\n"
    r = _bb(venv, tmp_path, "dlp", "scan", "--json", "--detector", "kingfisher", "-", stdin=body)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    found = {(f["detector"], f["action"]) for f in doc["findings"]}
    assert found == {("kingfisher", "block")}
    rules = " ".join(f["rule"] for f in doc["findings"])
    assert "sendgrid" in rules.lower() and "github" in rules.lower()
    assert SENDGRID not in r.stdout and GITHUB not in r.stdout


def test_decoded_views_reach_it_too(venv: Path, tmp_path: Path) -> None:
    import base64

    body = base64.b64encode(f"key: {SENDGRID}\n".encode()).decode() + "\n"
    r = _bb(venv, tmp_path, "dlp", "scan", "--json", "--detector", "kingfisher", "-", stdin=body)
    assert r.returncode == 1, r.stdout + r.stderr
    (finding,) = [f for f in json.loads(r.stdout)["findings"] if f["action"] == "block"]
    assert finding["location"]["decoded"] == "base64"


def test_clean_text_passes(venv: Path, tmp_path: Path) -> None:
    body = (REPO / "core/src/bot_bottle/dlp/pipeline.py").read_text()
    r = _bb(venv, tmp_path, "dlp", "scan", "--detector", "kingfisher", "-", stdin=body)
    assert (r.returncode, r.stdout.strip()) == (0, "no findings"), r.stdout + r.stderr
