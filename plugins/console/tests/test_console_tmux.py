"""``bot-bottle supervise`` in a real terminal: tmux at 120x40, keys sent
with send-keys, the screen read with capture-pane; then resized to 80x24.
What a headless driver cannot show: the real CLI entry point, the real
terminal's escape handling and a resize."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot_bottle.contracts.supervise import CapabilityBlockPayload, SuperviseQueue

SLUG = "tmux-5c9d"
CLI = str(Path(sys.executable).parent / "bot-bottle")


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        r = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "ops")

    def wait_for(self, *needles: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if all(n in text for n in needles):
                return text
            time.sleep(0.2)
        raise AssertionError(f"{needles} not on screen:\n{text}")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[tuple[Tmux, Path]]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: scripts/setup.sh installs it")
    home = tmp_path / "home"
    state = home / "state" / SLUG
    state.mkdir(parents=True)
    (state / "metadata.json").write_text(
        json.dumps({"slug": SLUG, "agent": "night-agent", "label": "nightly",
                    "backend": "docker", "provider": "shell", "pid": os.getpid()})
    )  # fmt: skip
    t = Tmux(f"bbtest-{uuid.uuid4().hex[:8]}")
    t("-f", "/dev/null", "new-session", "-d", "-s", "ops", "-x", "120", "-y", "40",
      # Inherited COLUMNS/LINES would override the pane's real size.
      "env", "-u", "COLUMNS", "-u", "LINES", f"BOT_BOTTLE_HOME={home}", "TERM=xterm-256color",
      # A non-interactive $EDITOR: the console hands the terminal over and back.
      "EDITOR=sed -i s/jq/yq/", "VISUAL=",
      CLI, "supervise")  # fmt: skip
    try:
        yield t, home
    finally:
        subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True, check=False)


def test_supervise_in_tmux_shows_answers_and_survives_a_resize(tmux: tuple[Tmux, Path]) -> None:
    t, home = tmux
    queue = SuperviseQueue(home / "supervise" / SLUG, SLUG)
    t.wait_for(SLUG, "nightly", "night-agent")
    assert t("display", "-p", "-t", "ops", "#{window_width}x#{window_height}").strip() == "120x40"
    # The agent proposes while the console is open: it appears without a key.
    pid = queue.submit(
        CapabilityBlockPayload(dockerfile="RUN apt-get install -y jq\n", justification="need jq")
    ).id
    screen = t.wait_for(pid, "need jq", "committed and resumed")
    assert "pending" in screen
    t("send-keys", "-t", "ops", "a")
    t.wait_for("Approve " + pid)
    t("send-keys", "-t", "ops", "y")
    # The screen updates: the detail shows the decision.
    t.wait_for("approved at")
    assert (home / "state" / SLUG / "capabilities.json").exists()
    response = queue.load_response(pid)
    assert response is not None and response.decision == "approved"

    t("resize-window", "-t", "ops", "-x", "80", "-y", "24")
    small = t.wait_for(SLUG, "approve")
    lines = small.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    # Still usable at 80x24: a second proposal arrives and is rejected by key.
    pid2 = queue.submit(CapabilityBlockPayload(dockerfile="RUN x\n", justification="again")).id
    t.wait_for(pid2[:20])
    # Under load the key can arrive before the new row is selected; a key
    # that did nothing is sent again (a second dialog would not open).
    for attempt in range(3):
        t("send-keys", "-t", "ops", "r")
        try:
            t.wait_for("comment", timeout=15.0)
            break
        except AssertionError:
            if attempt == 2:
                raise
    t("send-keys", "-t", "ops", "-l", "no thanks")
    t("send-keys", "-t", "ops", "Enter")
    deadline = time.monotonic() + 20
    while queue.load_response(pid2) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    rejected = queue.load_response(pid2)
    assert rejected is not None and rejected.comment == "no thanks"

    # Edit in $EDITOR, then approve what it wrote.
    pid3 = queue.submit(CapabilityBlockPayload(dockerfile="RUN apk add jq\n", justification="3")).id
    t.wait_for(pid3[:20])
    # As with "r" above: under load "E" can arrive before the new row is
    # selected, and does nothing then (CI saw this once).
    for attempt in range(3):
        t("send-keys", "-t", "ops", "E")
        try:
            t.wait_for("as edited", "RUN apk add yq", timeout=15.0)
            break
        except AssertionError:
            if attempt == 2:
                raise
    t("send-keys", "-t", "ops", "y")
    deadline = time.monotonic() + 20
    while queue.load_response(pid3) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    edited = queue.load_response(pid3)
    assert edited is not None and edited.dockerfile == "RUN apk add yq\n"
    t("send-keys", "-t", "ops", "q")
