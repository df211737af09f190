"""The ``--cwd`` tree's hand-over to the agent's uid and its hand-back
(``bot_bottle_docker.tree_owner``), against ``chown -R`` of the same tree
there and back, in the same run (ratios, so machines compare). Run as root
(the chown to other uids needs it), on the filesystem of the temp dir.

The tree is N files in directories of 20 (a source tree's shape). The
helper container the backend runs them in adds its start-up on top (shown
separately with ``--helper IMAGE``, the bundle image).

    sudo .venv/bin/python bench/tree_handover.py [--files 50000] [--json] [--helper IMAGE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bot_bottle_docker import tree_owner

OWNER = 4242


def make_tree(top: Path, files: int) -> None:
    for i in range(files):
        d = top / f"d{i // 400}" / f"s{(i // 20) % 20}"
        if i % 20 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_bytes(b"x = 1\n")
    for path in [top, *top.rglob("*")]:
        os.chown(path, OWNER, OWNER)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--helper", default="", help="also time a no-op helper container")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bb-bench-tree-") as tmp:
        top = Path(tmp) / "repo"
        top.mkdir()
        make_tree(top, args.files)
        t0 = time.perf_counter()
        subprocess.run(["chown", "-R", str(tree_owner.AGENT_UID), str(top)], check=True)
        subprocess.run(["chown", "-R", str(OWNER), str(top)], check=True)
        chown_r = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = tree_owner.hand_over(top, tree_owner.AGENT_UID, OWNER, keep={"."}, skip=set())
        over = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = tree_owner.hand_back(top, tree_owner.AGENT_UID, OWNER)
        back_s = time.perf_counter() - t0
        shutil.rmtree(top)
    result: dict[str, object] = {
        "files": args.files,
        "entries": out["entries"],
        "handed_back": back,
        "chown_R_both_ways_s": round(chown_r, 3),
        "hand_over_s": round(over, 3),
        "hand_back_s": round(back_s, 3),
        "ratio_vs_chown_R": round((over + back_s) / chown_r, 2),
    }
    if args.helper:
        t0 = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint",
                        "/opt/bot-bottle/bin/python3", args.helper, "-c", "pass"],
                       check=True)  # fmt: skip
        result["helper_container_s"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
