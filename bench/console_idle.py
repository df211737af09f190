"""Idle CPU of the operator console (``bot-bottle supervise``) with 5 bottles.

The console runs in a real terminal (a detached tmux pane, 120x40) over a
home with 5 running bottles' state dirs and queues (2 pending proposals
each; the state dirs name this process as their launcher, so they count as
running). After a settle period, the console's CPU time (utime + stime from
/proc) is sampled over a window and reported as a percentage of one core.
Baseline, in the same run: a bare Textual app that only draws one label, so
the ratio says what the console adds over Textual's own idle cost. Target
(it stays open all day beside the agents): under 2 % of a core.

The bottles are state dirs, not containers: the console's refusal counter
asks the Docker backend about each running bottle every 30 s, which for a
bottle without containers is one label query.

    .venv/bin/python bench/console_idle.py [--window 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
BARE = """
from textual.app import App
from textual.widgets import Label
class Bare(App):
    def compose(self):
        yield Label("idle")
Bare().run()
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_in_tmux(argv: list[str], env: dict[str, str], settle: float, window: float) -> float:
    sock = f"bbbench-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    envs = [f"{k}={v}" for k, v in env.items()]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "b", "-x", "120", "-y", "40",
         "env", "-u", "COLUMNS", "-u", "LINES", *envs, *argv],
        check=True,
    )  # fmt: skip
    try:
        out = subprocess.run(
            [*tmux, "display", "-p", "-t", "b", "#{pane_pid}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        pid = int(out.stdout.strip())
        time.sleep(settle)
        start = cpu_seconds(pid)
        time.sleep(window)
        return (cpu_seconds(pid) - start) / window * 100
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)


def make_home(root: Path, bottles: int) -> None:
    from bot_bottle.supervise_queue import CapabilityBlockPayload, SuperviseQueue

    for i in range(bottles):
        slug = f"bench-{i}"
        state = root / "state" / slug
        state.mkdir(parents=True)
        meta = {"slug": slug, "agent": f"agent-{i}", "backend": "docker", "provider": "shell",
                "label": f"bench {i}", "started_at": "2026-01-01T00:00:00+00:00",
                "pid": os.getpid()}  # fmt: skip
        (state / "metadata.json").write_text(json.dumps(meta))
        queue = SuperviseQueue(root / "supervise" / slug, slug)
        for j in range(2):
            queue.submit(
                CapabilityBlockPayload(dockerfile=f"RUN echo {j}\n", justification="bench")
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--bottles", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        sys.stderr.write("error: tmux is not installed\nhint: scripts/setup.sh installs it\n")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        make_home(home, args.bottles)
        env = {"BOT_BOTTLE_HOME": str(home), "TERM": "xterm-256color"}
        console = run_in_tmux([str(BIN / "bot-bottle"), "supervise"], env, args.settle, args.window)
        bare = run_in_tmux([sys.executable, "-c", BARE], env, args.settle, args.window)
    result = {
        "bottles": args.bottles,
        "window_s": args.window,
        "console_cpu_percent": round(console, 3),
        "bare_textual_cpu_percent": round(bare, 3),
        "ratio_vs_bare": round(console / bare, 2) if bare > 0 else None,
        "target_percent": 2.0,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:26} {v}")
    return 0 if console < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
