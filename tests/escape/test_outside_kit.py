"""The escape and fault suites' "outside" servers must keep answering while a
peer stalls: a TLS handshake done in the accept loop let one silent
connection (or one whose bottle network was removed) block every later
request and hang the suite's teardown for its whole timeout."""

from __future__ import annotations

import os
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import pytest
from bot_bottle_testkit.egress import make_test_pki

from tests.escape.outside import Outside


@pytest.mark.skipif(os.geteuid() != 0, reason="binds ports 443 and 53 (root)")
def test_a_peer_that_never_says_hello_blocks_neither_requests_nor_stop(tmp_path: Path) -> None:
    host = "127.0.0.77"
    pki = make_test_pki(tmp_path / "pki", ["allowed.test"])
    outside = Outside(host, pki).start()
    silent = socket.create_connection((host, 443))
    try:
        time.sleep(0.3)  # the server has accepted it and waits for its hello
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.check_hostname = False
        req = urllib.request.Request(f"https://{host}/echo", headers={"Host": "allowed.test"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:  # noqa: S310 (https)
            assert resp.status == 200
    finally:
        t0 = time.monotonic()
        outside.stop()
        stopped_in = time.monotonic() - t0
        silent.close()
    assert stopped_in < 10, f"stop() took {stopped_in:.1f} s with a silent peer"
