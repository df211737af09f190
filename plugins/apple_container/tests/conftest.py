"""The contract fake of Apple's ``container`` CLI, wired in for a test."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FAKE = Path(__file__).with_name("fake_container.py")


@dataclass
class Fake:
    exe: Path
    state_path: Path
    log_path: Path

    def calls(self) -> list[list[str]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def heads(self, n: int = 2) -> list[str]:
        return [" ".join(c[:n]) for c in self.calls()]

    def state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"containers": {}, "networks": {}, "images": {}}
        return json.loads(self.state_path.read_text())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.exe), *args], capture_output=True, text=True, check=False)

    def add_image(self, ref: str) -> None:
        state = self.state()
        state.setdefault("subnet", 64)
        state["images"][ref] = "sha256:" + "ab" * 32
        self.state_path.write_text(json.dumps(state))

    def clear_log(self) -> None:
        self.log_path.write_text("")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fake]:
    """The fake on the backend's CLI path, and the host seen as macOS."""
    from bot_bottle_apple_container import backend

    root = tmp_path / "fake-container"
    root.mkdir()
    exe = root / "container"
    # The interpreter running the tests: tarfile's data filter needs 3.12+.
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    exe.chmod(0o755)
    f = Fake(exe, root / "state.json", root / "log.jsonl")
    monkeypatch.setenv("BOT_BOTTLE_APPLE_CONTAINER_CLI", str(exe))
    monkeypatch.setenv("FAKE_CONTAINER_STATE", str(f.state_path))
    monkeypatch.setenv("FAKE_CONTAINER_LOG", str(f.log_path))
    monkeypatch.setattr(backend, "host_os", lambda: "Darwin")
    monkeypatch.setattr(backend, "mac_version", lambda: "26.1")
    yield f
