"""The bundle's configuration directory as the launch kit writes it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from bot_bottle_sidecars.launch.files import write_etc

from bot_bottle.errors import BotBottleError


def _plan(upstream_ca: Path | None) -> SimpleNamespace:
    return SimpleNamespace(
        slug="shell-0a1b2c", egress_config=None, gitgate=None, supervise=True,
        extra_hosts={}, agent_host="127.0.0.1", upstream_ca=upstream_ca,
    )  # fmt: skip


def test_writes_the_init_plan_mount_points_and_upstream_ca(tmp_path: Path) -> None:
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    etc = tmp_path / "run" / "etc"
    write_etc(_plan(ca), etc)  # type: ignore[arg-type]
    names = {d["name"] for d in json.loads((etc / "init-plan.json").read_text())["daemons"]}
    assert names == {"egress", "supervise", "relay"}
    assert (etc / "ca").is_dir() and (etc / "git-gate" / "keys").is_dir()
    (copied,) = [p for p in etc.rglob("*.pem") if p.is_file()]
    assert copied.read_text() == ca.read_text()
    assert etc.stat().st_mode & 0o777 == 0o700


def test_an_unreadable_upstream_ca_is_a_clear_error(tmp_path: Path) -> None:
    want = r"cannot read the bottle's egress\.upstream_ca"
    with pytest.raises(BotBottleError, match=want) as exc:
        write_etc(_plan(tmp_path / "missing.pem"), tmp_path / "etc")  # type: ignore[arg-type]
    assert exc.value.hint == "point upstream_ca at a readable PEM file"
