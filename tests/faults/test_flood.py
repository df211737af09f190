"""Fault 5: a flood from the agent at its own sidecars. 2,000 connections
held open on the proxy at once, a 10 GiB upload on a DLP route, 10,000
supervise calls and 200 git fetches, 100 at a time; then, on their own,
1,000 git fetches all started at once (the issue's figure): the bundle stays
under its memory limit with every daemon up, a normal request still works
during the flood, and the log grows by a bounded number of lines, not one
per request. Every loop is bounded in count and time; all traffic goes to
the bottle's own sidecars (and the suite's own upstream).

Figures (peak memory, the normal request's latency under the flood) are
printed for the record (``-s``), never asserted on time.
"""

from __future__ import annotations

import re

import pytest

from tests.faults.conftest import Bottle

pytestmark = pytest.mark.docker

CONNECTIONS = 2000
SUPERVISE_CALLS = 10_000
#: In the combined flood: git-gate lets 8 through at a time and each runs its
#: access hook (~2 s on a loaded 2-core runner, the upstream here refusing),
#: so 200 (100 in parallel) keep that test short; the issue's 1,000, all at
#: once, are THOUSAND_FETCHES below.
GIT_FETCHES = 200
THOUSAND_FETCHES = 1000
#: Bound on the whole 1,000-fetch flood (the queue drains in ~5 minutes here).
THOUSAND_TIMEOUT = 780

HOLD = f"""
set -u
ok=0; fds=()
for i in $(seq {CONNECTIONS}); do
  exec {{fd}}<>/dev/tcp/127.0.0.1/8080 || break
  printf 'CONNECT allowed.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n' >&$fd
  fds+=($fd)
done
# An external head, not read -t: bash's read -t uses select(), which cannot
# take a descriptor above 1023.
for fd in "${{fds[@]}}"; do
  line=$(timeout 30 head -n 1 <&$fd)
  case "$line" in
    "HTTP/1.1 200"*) ok=$((ok+1));;
    *) echo "other: ${{line:0:60}}" >> /tmp/other;;
  esac
done
[ -e /tmp/other ] && sort /tmp/other | uniq -c | head -5 && rm /tmp/other
echo "held $ok of ${{#fds[@]}}"
# While all of them are open: an ordinary request, timed.
curl -sS -m 60 -o /dev/null -w 'normal %{{http_code}} %{{time_total}}\\n' https://allowed.test/echo
for fd in "${{fds[@]}}"; do exec {{fd}}>&-; done
"""

UPLOAD = """head -c 10G /dev/zero | curl -sS -m 120 -o /tmp/up.out -w 'upload %{http_code}\\n' \
  -H 'Transfer-Encoding: chunked' -T - https://allowed.test/upload; true"""

SUPERVISE = f"""
body='{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{}}}}'
for i in $(seq {SUPERVISE_CALLS}); do
  printf 'url = "http://127.0.0.1:8765/mcp"\\noutput = "/dev/null"\\n'
done > /tmp/urls
curl -sS -Z --parallel-max 50 -m 60 -K /tmp/urls -w '%{{http_code}}\\n' \
  -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  -d "$body" | sort | uniq -c
"""


def _git(bottle: Bottle) -> str:
    o = bottle.outside
    url = f"ssh://git@{o.host}:{o.listener_port}/proj.git"
    return (
        f"seq {GIT_FETCHES} | xargs -P 100 -I{{}} sh -c "
        f"'timeout 60 git ls-remote {url} >/dev/null 2>&1; echo $?' | sort | uniq -c"
    )


def _crashes(bottle: Bottle) -> dict[str, int]:
    """Crash count of each daemon so far, and the bundle's peak memory in MiB."""
    out = {n: int(st["crashes"]) for n, st in bottle.init_status().items()}
    out["peak_mib"] = _peak_bytes(bottle) >> 20
    return out


def _tally(out: str) -> dict[int, int]:
    """``uniq -c`` lines (count, value) -> {value: count}; other lines ignored."""
    found = re.findall(r"^\s*(\d+) (\d+)$", out, re.M)
    return {int(value): int(count) for count, value in found}


def _peak_bytes(bottle: Bottle) -> int:
    r = bottle.bundle.exec_run(
        ["sh", "-c", "cat /sys/fs/cgroup/memory.peak 2>/dev/null || "
         "cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes"], user="root",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return int(r.output.split()[0])


def test_a_flood_from_the_agent_stays_within_limits_and_is_not_logged_per_request(
    bottle: Bottle,
) -> None:
    from bot_bottle.manifest.models import DEFAULT_LIMITS, memory_bytes

    limit = memory_bytes(DEFAULT_LIMITS["bundle"]["memory"])
    before = bottle.init_status()
    lines_before = len(bottle.bundle.logs().splitlines())

    code, held = bottle.sh(HOLD, timeout=300)
    assert code == 0, held[-2000:]
    counts = held.split("held ", 1)[1].split()
    assert counts[0] == counts[2] == str(CONNECTIONS), held[-2000:]
    normal = next(x for x in held.splitlines() if x.startswith("normal "))
    assert normal.split()[1] == "200", held[-2000:]

    stages = {"connections": _crashes(bottle)}
    code, up = bottle.sh(UPLOAD, timeout=300)
    stages["upload"] = _crashes(bottle)
    # Refused at the scan cap (32 MiB), the rest never read into memory.
    assert "upload 413" in up, up[-2000:]

    code, calls = bottle.sh(SUPERVISE, timeout=600)
    answered = _tally(calls)
    assert sum(answered.values()) == SUPERVISE_CALLS, calls
    assert answered.get(200, 0) == SUPERVISE_CALLS, calls

    stages["supervise"] = _crashes(bottle)
    code, fetches = bottle.sh(_git(bottle), timeout=600)
    stages["git"] = _crashes(bottle)
    exits = _tally(fetches)
    assert sum(exits.values()) == GIT_FETCHES, fetches
    assert 124 not in exits, f"a fetch hung: {fetches}"

    peak = _peak_bytes(bottle)
    bundle = bottle.bundle
    assert bundle.status == "running" and not bundle.attrs["State"]["OOMKilled"]
    after = bottle.init_status()
    died = [e for e in bottle.bundle_events() if e.get("event") == "daemon_exited"]
    print(f"\nflood stages (crashes so far, peak MiB): {stages}")
    for name, st in after.items():
        assert st["state"] == "running", (name, st)
        assert st["crashes"] == before[name]["crashes"], (name, st["last_exit"], stages, died[-3:])
    assert peak < limit, f"bundle peaked at {peak} bytes (limit {limit})"
    added = len(bundle.logs().splitlines()) - lines_before
    requests = CONNECTIONS + SUPERVISE_CALLS + GIT_FETCHES + 2
    print(
        f"\nflood: {requests} requests, bundle memory peak {peak / 2**20:.0f} MiB "
        f"(limit {limit / 2**20:.0f} MiB), {added} log lines; {normal.strip()}; "
        f"supervise {answered}; git exits {exits}"
    )
    assert added < 200, f"{added} log lines for {requests} requests"


@pytest.mark.timeout(THOUSAND_TIMEOUT + 120)
def test_a_thousand_git_fetches_at_once_stay_within_limits_and_are_logged_once_per_reason(
    bottle: Bottle,
) -> None:
    """1,000 ``git ls-remote`` started together (``xargs -P 1000``: one shell
    and one git each, within the agent's pids limit). They queue in the
    relay; every one ends (none killed by the bound), the bundle stays under
    its memory limit with no daemon restarted, and git-gate's refusal (the
    upstream here refuses) is logged once per repo per 10 s with a count,
    not 1,000 times."""
    import json
    import time

    from bot_bottle.manifest.models import DEFAULT_LIMITS, memory_bytes

    limit = memory_bytes(DEFAULT_LIMITS["bundle"]["memory"])
    before = bottle.init_status()
    lines_before = len(bottle.bundle.logs().splitlines())
    o = bottle.outside
    url = f"ssh://git@{o.host}:{o.listener_port}/proj.git"
    script = (
        f"seq {THOUSAND_FETCHES} | xargs -P {THOUSAND_FETCHES} -I{{}} "
        f"sh -c 'git ls-remote {url} >/dev/null 2>&1; echo $?' | sort | uniq -c"
    )
    t0 = time.monotonic()
    code, fetches = bottle.sh(script, timeout=THOUSAND_TIMEOUT)
    took = time.monotonic() - t0
    exits = _tally(fetches)
    assert code == 0, fetches[-2000:]
    assert sum(exits.values()) == THOUSAND_FETCHES, fetches[-2000:]

    peak = _peak_bytes(bottle)
    bundle = bottle.bundle
    assert bundle.status == "running" and not bundle.attrs["State"]["OOMKilled"]
    after = bottle.init_status()
    for name, st in after.items():
        assert st["state"] == "running", (name, st)
        assert st["crashes"] == before[name]["crashes"], (name, st["last_exit"])
    assert peak < limit, f"bundle peaked at {peak} bytes (limit {limit})"

    new = bundle.logs().decode("utf-8", "replace").splitlines()[lines_before:]
    refused = []
    for line in new:
        if "upstream unreachable" in line and line.startswith("{"):
            refused.append(json.loads(line))
    # Each fetch got git-gate's answer (128: its refusal, git's fatal exit),
    # none was cut off or crashed; the log holds one line per 10 s for them,
    # the rest folded into its count.
    assert set(exits) <= {0, 128}, exits
    assert 1 <= len(refused) <= took / 10 + 2, (len(refused), took, refused[:3])
    folded = sum(1 + int(r.get("repeated_before") or 0) for r in refused)
    assert folded <= THOUSAND_FETCHES, refused
    assert len(new) < 100, f"{len(new)} log lines for {THOUSAND_FETCHES} fetches: {new[-5:]}"
    print(
        f"\n{THOUSAND_FETCHES} parallel git fetches in {took:.0f} s: exits {exits}, bundle "
        f"memory peak {peak / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB), {len(new)} log "
        f"lines ({len(refused)} 'upstream unreachable', {folded} fetches accounted)"
    )
