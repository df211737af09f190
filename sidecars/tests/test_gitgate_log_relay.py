"""git-gate copies its hooks' log lines into its own log: a refusal an agent
can repeat at will (fetching while the upstream is down) once per repo per
10 s, with the count; everything else line for line."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

from bot_bottle_sidecars.gitgate.daemon import _relay  # pyright: ignore[reportPrivateUsage]


def test_a_repeated_refusal_is_logged_once_with_its_count(tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    log.touch()
    out = io.StringIO()
    stop = threading.Event()
    t = threading.Thread(target=_relay, args=(log, stop, out))
    t.start()
    time.sleep(0.3)  # the relay starts at the end of the file
    down = {"event": "upstream unreachable; request refused", "repo": "proj"}
    with log.open("a") as fh:
        for _ in range(50):
            fh.write(json.dumps(down) + "\n")
        fh.write(json.dumps({"event": "push refused", "repo": "proj"}) + "\n")
        fh.write(json.dumps({**down, "repo": "other"}) + "\n")
    time.sleep(0.5)
    stop.set()
    t.join(timeout=5)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["event"], x["repo"]) for x in lines] == [
        ("upstream unreachable; request refused", "proj"),
        ("push refused", "proj"),
        ("upstream unreachable; request refused", "other"),
    ]
