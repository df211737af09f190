"""The docker freezer's pure parts: what is left out and the imported config
(the export/scan/import itself runs against real bottles in tests/test_snapshots.py)."""

from __future__ import annotations

import json

from bot_bottle_docker.freezer import _changes, _excluded, _guest_path

CA = "/usr/local/share/ca-certificates/bot-bottle-ca.crt"


def test_scratch_content_and_the_bottle_ca_are_left_out_but_not_the_directories() -> None:
    assert _excluded("/tmp/x", CA) and _excluded("/var/tmp/a/b", CA) and _excluded(CA, CA)
    assert not _excluded("/tmp", CA) and not _excluded("/var/tmp", CA)
    assert not _excluded("/tmpfoo/x", CA) and not _excluded("/home/agent/tmp/x", CA)


def test_export_names_become_guest_paths() -> None:
    assert _guest_path("home/agent/x") == "/home/agent/x"
    assert _guest_path("./etc/") == "/etc"
    assert _guest_path(".dockerenv") == "/.dockerenv"


def test_the_image_config_is_the_images_own_and_values_are_quoted() -> None:
    config = {
        "Env": ["PATH=/usr/bin:/bin", 'QUOTE=a "b" c'],
        "User": "agent",
        "WorkingDir": "/home/agent",
        "Cmd": ["bash"],
        "Labels": {"org.bot-bottle.fingerprint": "x", "bot-bottle.snapshot": "old", "keep": "1"},
    }
    changes = _changes(config, {"bot-bottle.snapshot": "new"})
    assert changes[:2] == ['ENV PATH="/usr/bin:/bin"', f"ENV QUOTE={json.dumps('a "b" c')}"]
    assert "USER agent" in changes and "WORKDIR /home/agent" in changes
    assert 'CMD ["bash"]' in changes
    labels = [c for c in changes if c.startswith("LABEL")]
    # A parent snapshot's and the image build's labels are not inherited.
    assert 'LABEL "bot-bottle.snapshot"="new"' in labels
    assert 'LABEL "keep"="1"' in labels
    assert not any('"old"' in c or "fingerprint" in c for c in labels)
