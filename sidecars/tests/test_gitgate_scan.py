"""What a push brings, as the scanner sees it: real git repos, no daemon."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from bot_bottle_sidecars.gitgate import scan

from bot_bottle.contracts.dlp import Action, DlpDetector, Finding, Location, ScanContext

AWS = "AKIA" + "Z7Q2X9V4B6N3M5K8"


class _Aws(DlpDetector):
    name = "aws"

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        return [
            Finding(
                self.name,
                "aws-key",
                Action.BLOCK,
                Location(context.location.part, offset=m.start(), length=16),
                "[REDACTED]",
            )
            for m in re.finditer(rb"AKIA[0-9A-Z]{16}", data)
        ]


class _Broken(DlpDetector):
    name = "broken"

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        raise RuntimeError("boom")


ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "a",
    "GIT_AUTHOR_EMAIL": "a@b.test",
    "GIT_COMMITTER_NAME": "a",
    "GIT_COMMITTER_EMAIL": "a@b.test",
}


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    if proc.returncode:
        pytest.fail(f"git {' '.join(args)}: {proc.stdout}{proc.stderr}")
    return proc.stdout.strip()


class Repos:
    """``gate`` (bare, its refs are what it has seen) and ``agent`` (a clone)."""

    def __init__(self, root: Path) -> None:
        self.gate = root / "gate.git"
        self.agent = root / "agent"
        git("init", "-q", "--bare", "-b", "main", str(self.gate), cwd=root)
        git("clone", "-q", str(self.gate), str(self.agent), cwd=root)
        git("symbolic-ref", "HEAD", "refs/heads/main", cwd=self.agent)

    def commit(self, files: dict[str, str], message: str = "c") -> str:
        for name, text in files.items():
            (self.agent / name).parent.mkdir(parents=True, exist_ok=True)
            (self.agent / name).write_text(text)
        git("add", "-A", cwd=self.agent)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.agent)
        return git("rev-parse", "HEAD", cwd=self.agent)

    def publish(self) -> None:
        """What the gate already has (came from upstream)."""
        git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=self.agent)

    def scan(self, tip: str, detectors: list[DlpDetector] | None = None) -> scan.Report:
        # Objects arrive without a ref, as in receive-pack's quarantine.
        git("fetch", "-q", str(self.agent), tip, cwd=self.gate)
        return scan.scan_push(self.gate, [tip], detectors or [_Aws()], target="app", env=ENV)


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    r = Repos(tmp_path)
    r.commit({"README": "x\n"})
    r.publish()
    return r


def test_finding_names_the_line_in_the_new_file(repos: Repos) -> None:
    repos.commit({"f.txt": "".join(f"line {i}\n" for i in range(1, 11))})
    repos.publish()
    lines = [f"line {i}\n" for i in range(1, 11)]
    lines[6] = f"key {AWS}\n"
    sha = repos.commit({"f.txt": "".join(lines)})
    [f] = repos.scan(sha).findings
    assert (f.location.part, f.location.name, f.location.line) == ("file_content", "f.txt", 7)
    assert f.location.commit == sha


def test_only_added_lines_are_scanned(repos: Repos) -> None:
    repos.commit({"old.txt": f"{AWS}\nother\n"})
    repos.publish()
    sha = repos.commit({"old.txt": f"{AWS}\nchanged\n"})
    assert repos.scan(sha).findings == []


def test_quoted_file_names_are_unquoted(repos: Repos) -> None:
    name = 'dir/we"ird näme\t.txt'
    sha = repos.commit({name: f"{AWS}\n"})
    [f] = repos.scan(sha).findings
    assert f.location.name == name


def test_rename_of_a_file_with_an_old_secret_is_not_flagged(repos: Repos) -> None:
    repos.commit({"a/fixture.txt": f"{AWS}\n" + "filler line\n" * 20})
    repos.publish()
    (repos.agent / "b").mkdir()
    git("mv", "a/fixture.txt", "b/fixture.txt", cwd=repos.agent)
    sha = repos.commit({})
    assert repos.scan(sha).findings == []


def test_merge_of_known_history_is_not_rescanned_but_evil_merge_content_is(
    repos: Repos,
) -> None:
    base = git("rev-parse", "HEAD", cwd=repos.agent)
    git("checkout", "-q", "-b", "side", cwd=repos.agent)
    repos.commit({"side.txt": f"{AWS}\n"})
    repos.publish()  # upstream holds the old secret on main now
    git("checkout", "-q", "-B", "feature", base, cwd=repos.agent)
    repos.commit({"feature.txt": "mine\n"})
    git("merge", "-q", "--no-edit", "main", cwd=repos.agent)
    clean_merge = git("rev-parse", "HEAD", cwd=repos.agent)
    assert repos.scan(clean_merge).findings == []
    # An evil merge: content in the merge result that neither parent had.
    git("checkout", "-q", "-B", "evil", base, cwd=repos.agent)
    repos.commit({"e.txt": "one\n"})
    git("merge", "-q", "--no-commit", "main", cwd=repos.agent)
    (repos.agent / "e.txt").write_text(f"one\n{AWS}\n")
    git("add", "e.txt", cwd=repos.agent)
    git("commit", "-q", "-m", "merge main", cwd=repos.agent)
    evil = git("rev-parse", "HEAD", cwd=repos.agent)
    findings = repos.scan(evil).findings
    assert [(f.location.commit, f.location.name) for f in findings] == [(evil, "e.txt")]


def test_commit_messages_are_scanned(repos: Repos) -> None:
    sha = repos.commit({}, f"subject\n\nbody has {AWS}")
    [f] = repos.scan(sha).findings
    assert (f.location.part, f.location.commit, f.location.line) == ("commit_message", sha, 3)


def test_encoded_secrets_are_found_through_the_dlp_pipeline(repos: Repos) -> None:
    # The gate scans through core's pipeline: a key base64- or URL-encoded in
    # a committed file, or JSON-escaped in a message, is found like a plain one.
    import base64
    import json

    b64 = base64.b64encode(f"aws={AWS}".encode()).decode()
    url = "".join(f"%{b:02X}" for b in AWS.encode())
    lines = ["a\n", "b\n", f"blob: {b64}\n", "c\n", f"q={url}\n"]
    message = json.dumps({"k": AWS}).replace(AWS[:4], "\\u0041KIA")
    sha = repos.commit({"conf.txt": "".join(lines)}, f"subject\n\n{message}")
    found = sorted(
        (f.location.part, f.location.line, f.location.decoded or "")
        for f in repos.scan(sha).findings
    )
    assert found == [
        ("commit_message", 3, "json"),
        ("file_content", 3, "base64"),
        ("file_content", 5, "url"),
    ]


def test_a_failing_detector_fails_the_scan(repos: Repos) -> None:
    sha = repos.commit({"x": "y\n"})
    with pytest.raises(scan.ScanError, match="broken"):
        repos.scan(sha, [_Aws(), _Broken()])


def test_requested_detector_that_is_not_installed_is_an_error(bot_bottle_host) -> None:
    with pytest.raises(scan.ScanError, match="not installed"):
        scan.load_detectors(bot_bottle_host, ["token_patterns"])


def test_combined_diff_keeps_only_lines_new_against_every_parent() -> None:
    stream = [
        b"\x00" + b"c" * 40 + b"\n",
        b"\n",
        b"diff --cc f.txt\n",
        b"index 1,2..3\n",
        b"--- a/f.txt\n",
        b"+++ b/f.txt\n",
        b"@@@ -1,2 -1,2 +1,4 @@@\n",
        b"  a\n",
        b" -gone from the result\n",
        b"++evil\n",
        b"+ from the second parent\n",
        b"- also gone\n",
        b"++evil2\n",
        b"\\ No newline at end of file\n",
    ]
    [change] = list(scan._parse_patch(stream))  # pyright: ignore[reportPrivateUsage]
    assert (change.commit, change.path) == ("c" * 40, "f.txt")
    assert change.data == b"evil\nevil2\n"
    assert (change.line_at(0), change.line_at(5)) == (2, 4)


def test_huge_files_are_scanned_in_pieces_with_correct_lines(
    repos: Repos, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan, "PIECE_BYTES", 200)
    monkeypatch.setattr(scan, "_PIECE_CHECK_LINES", 8)
    lines = [f"line {i:04d}\n" for i in range(1, 301)]
    lines[249] = f"key {AWS}\n"
    sha = repos.commit({"big.txt": "".join(lines)})
    git("fetch", "-q", str(repos.agent), sha, cwd=repos.gate)
    changes = list(scan._added_lines(repos.gate, [sha, "--not", "--all"], ENV))  # pyright: ignore[reportPrivateUsage]
    assert len(changes) > 5 and sum(c.first_piece for c in changes) == 1
    assert b"".join(c.data for c in changes) == "".join(lines).encode()
    [f] = repos.scan(sha).findings
    assert (f.location.name, f.location.line) == ("big.txt", 250)
