"""Responses stream through the proxy: bounded memory, events as they arrive."""

from __future__ import annotations

import ssl
import subprocess

import httpx2 as httpx
import pytest
from bot_bottle_testkit.egress import EgressProcess

from .conftest import Env

SIZE = 200 * 1024 * 1024


def test_200mb_download_passes_with_bounded_proxy_memory(
    egress: EgressProcess, egress_env: Env
) -> None:
    url = f"https://api.upstream.test:{egress_env.upstream.https_port}/big?n={SIZE}"
    before = egress.hwm_kib()
    r = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "120",
            "--proxy",
            egress.proxy_url,
            "--cacert",
            str(egress_env.ca.agent_cert),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.stdout == f"200 {SIZE}", r.stderr
    peak_growth_mib = (egress.hwm_kib() - before) / 1024
    # A buffering proxy would hold the whole 200 MiB (and copies of it).
    print(f"proxy peak RSS growth over a 200 MiB download: {peak_growth_mib:.1f} MiB")
    assert peak_growth_mib < 48, f"proxy peak RSS grew by {peak_growth_mib:.0f} MiB"


# dlp.upstream.test scans responses as they stream: scanning must not hold events back.
@pytest.mark.parametrize("host", ["api.upstream.test", "dlp.upstream.test"])
def test_sse_first_event_arrives_before_the_stream_ends(
    egress: EgressProcess, egress_env: Env, host: str
) -> None:
    egress_env.upstream.sse_release.clear()
    ctx = ssl.create_default_context(cafile=str(egress_env.ca.agent_cert))
    url = f"https://{host}:{egress_env.upstream.https_port}/sse"
    with (
        httpx.Client(proxy=egress.proxy_url, verify=ctx, trust_env=False, timeout=10) as client,
        client.stream("GET", url) as response,
    ):
        lines = response.iter_lines()
        # The upstream holds the rest of the stream until we have this event.
        assert next(lines) == "data: first"
        egress_env.upstream.sse_release.set()
        rest = [line for line in lines if line]
    assert rest == ["data: second"]
