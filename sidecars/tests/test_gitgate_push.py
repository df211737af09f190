"""Pushing through git-gate: scanned first, forwarded upstream over pinned SSH only when clean."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .conftest import git, new_upstream, start_gate

if TYPE_CHECKING:
    from .conftest import Gate, GatedClone, Sshd, Upstream

# Built at run time so this file itself holds no scannable token.
SECRETS = {
    "aws-access-key-id": "AKIA" + "Z7Q2X9V4B6N3M5K8",
    "github-token": "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5",
    "private-key": "-----BEGIN " + "OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\n-----END "
    "OPENSSH PRIVATE KEY-----",
}


@dataclass
class Bottle:
    """One test's agent clone, on a branch of its own in the shared upstream."""

    up: Upstream
    gate: Gate
    clone: Path
    sshd: Sshd
    branch: str

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        return self.gate.commit(self.clone, files, message)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.gate.git(*args, cwd=self.clone, check=check)

    def push(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``git push origin <args>``; by default the test's branch."""
        return self.gate.push(self.clone, *(args or (f"HEAD:refs/heads/{self.branch}",)))

    def upstream_head(self) -> str | None:
        return self.up.ref(f"refs/heads/{self.branch}")


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, sshd: Sshd
) -> Iterator[tuple[Upstream, Gate, Path]]:
    # One upstream, one gate and one clone for the module: starting them is
    # most of a test's cost on a loaded machine. Each test works in a
    # worktree of that clone on a branch (and tags) of its own.
    root = tmp_path_factory.mktemp("gitgate-push")
    up = new_upstream(root, sshd, "app")
    gate = start_gate(root, sshd, [("app", up)])
    clone = gate.clone(up, root / "clone")
    yield up, gate, clone
    gate.stop()


@pytest.fixture
def bottle(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sshd: Sshd,
    shared: tuple[Upstream, Gate, Path],
) -> Bottle:
    up, gate, clone = shared
    tag = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    branch = f"t-{request.node.originalname[5:40]}-{tag}"
    work = tmp_path / "work"
    gate.git("worktree", "add", "-q", "-b", branch, str(work), "origin/main", cwd=clone)
    return Bottle(up, gate, work, sshd, branch)


def test_clean_push_lands_upstream(bottle: Bottle) -> None:
    head = bottle.commit({"src/app.py": "print('clean')\n"})
    proc = bottle.push()
    assert proc.returncode == 0, proc.stderr
    assert bottle.upstream_head() == head
    assert "git-gate: scanned 1 new commit(s)" in proc.stderr


@pytest.mark.parametrize("rule", sorted(SECRETS))
def test_secret_in_a_file_is_rejected_before_any_upstream_contact(
    bottle: Bottle, rule: str
) -> None:
    before_conns = bottle.sshd.connections()
    sha = bottle.commit({"deploy/config.env": f"# settings\nregion=eu\nkey={SECRETS[rule]}\n"})
    proc = bottle.push()
    assert proc.returncode != 0
    assert f"testsecrets/{rule} in commit {sha[:12]} file deploy/config.env line 3" in proc.stderr
    assert "[REDACTED:" in proc.stderr
    assert SECRETS[rule].splitlines()[0] not in proc.stderr
    log = bottle.gate.wait_for_log(f"{sha[:12]} file deploy/config.env")
    assert SECRETS[rule].splitlines()[0] not in log  # the gate's log names it, redacted
    assert bottle.upstream_head() is None
    assert bottle.sshd.connections() == before_conns  # the upstream saw nothing


def test_secret_in_a_commit_message_is_rejected(bottle: Bottle) -> None:
    before_conns = bottle.sshd.connections()
    token = SECRETS["github-token"]
    sha = bottle.commit({"notes.txt": "hello\n"}, f"use token {token} for CI")
    proc = bottle.push()
    assert proc.returncode != 0
    assert f"testsecrets/github-token in commit {sha[:12]} (commit message)" in proc.stderr
    assert token not in proc.stderr
    assert bottle.sshd.connections() == before_conns


def test_secret_in_an_older_commit_of_the_pushed_range_is_rejected(bottle: Bottle) -> None:
    before_conns = bottle.sshd.connections()
    leaked = bottle.commit({"id_rsa": SECRETS["private-key"] + "\n"}, "oops")
    bottle.git("rm", "-q", "id_rsa")
    bottle.git("commit", "-q", "-m", "remove the key again")
    bottle.commit({"src/app.py": "print('fine')\n"}, "unrelated")
    proc = bottle.push()
    assert proc.returncode != 0
    assert f"testsecrets/private-key in commit {leaked[:12]} file id_rsa line 1" in proc.stderr
    assert bottle.upstream_head() is None
    assert bottle.sshd.connections() == before_conns


def test_secret_in_a_file_name_is_rejected_without_printing_the_name(bottle: Bottle) -> None:
    key = SECRETS["aws-access-key-id"]
    bottle.commit({f"creds-{key}.txt": "nothing here\n"})
    proc = bottle.push()
    assert proc.returncode != 0
    assert "testsecrets/aws-access-key-id" in proc.stderr
    assert "[name withheld" in proc.stderr
    assert key not in proc.stderr


def test_secret_in_a_branch_name_is_rejected_without_echoing_it(bottle: Bottle) -> None:
    key = SECRETS["aws-access-key-id"]
    bottle.commit({"ok.txt": "fine\n"})
    proc = bottle.push(f"HEAD:refs/heads/leak-{key}")
    assert proc.returncode != 0
    gate_lines = [ln for ln in proc.stderr.splitlines() if "git-gate:" in ln]
    assert any("(the name of a pushed ref; withheld)" in ln for ln in gate_lines)
    assert not any(key in ln for ln in gate_lines)
    assert key not in bottle.gate.wait_for_log("(the name of a pushed ref; withheld)")
    assert bottle.up.ref(f"refs/heads/leak-{key}") is None


def test_old_secret_already_upstream_does_not_block_a_new_branch(bottle: Bottle) -> None:
    # History the upstream already holds was never the agent's to leak.
    bottle.up.commit({"fixtures/aws.txt": f"{SECRETS['aws-access-key-id']}\n"}, "old fixture")
    bottle.git("pull", "-q", "--ff-only", "origin", "main")
    head = bottle.commit({"feature.txt": "new work\n"})
    proc = bottle.push()
    assert proc.returncode == 0, proc.stderr
    assert bottle.upstream_head() == head


def test_force_push_is_forwarded_as_force(bottle: Bottle) -> None:
    bottle.commit({"a.txt": "one\n"})
    assert bottle.push().returncode == 0
    bottle.git("reset", "-q", "--hard", "HEAD~1")
    rewritten = bottle.commit({"a.txt": "rewritten\n"})
    assert bottle.push().returncode != 0  # not a fast-forward
    proc = bottle.push("--force", f"HEAD:refs/heads/{bottle.branch}")
    assert proc.returncode == 0, proc.stderr
    assert bottle.upstream_head() == rewritten
    bottle.gate.wait_for_log(f'"forced": ["refs/heads/{bottle.branch}"]')


def test_tags_are_forwarded(bottle: Bottle) -> None:
    head = bottle.commit({"v.txt": "1.0\n"})
    bottle.git("tag", "light")
    bottle.git("tag", "-a", "v1.0", "-m", "release 1.0")
    proc = bottle.push(f"HEAD:refs/heads/{bottle.branch}", "light", "v1.0")
    assert proc.returncode == 0, proc.stderr
    assert bottle.up.ref("refs/tags/light") == head
    assert bottle.up.ref("refs/tags/v1.0^{commit}") == head


def test_secret_in_an_annotated_tag_message_is_rejected(bottle: Bottle) -> None:
    bottle.git("tag", "-a", "v2", "-m", f"token {SECRETS['github-token']}")
    proc = bottle.push("v2")
    assert proc.returncode != 0
    assert "testsecrets/github-token" in proc.stderr
    assert bottle.up.ref("refs/tags/v2") is None


def test_ref_pointing_at_a_blob_is_refused(bottle: Bottle) -> None:
    # A tag on a bare blob carries content no commit diff would show.
    (bottle.clone / "payload").write_text("data\n")
    blob = bottle.git("hash-object", "-w", "payload").stdout.strip()
    proc = bottle.push(f"{blob}:refs/tags/blob-{bottle.branch}")
    assert proc.returncode != 0
    assert "which is not a commit" in proc.stderr
    assert bottle.up.ref(f"refs/tags/blob-{bottle.branch}") is None


def test_branch_and_tag_deletions_are_forwarded(bottle: Bottle) -> None:
    bottle.git("tag", "doomed")
    assert bottle.push(f"HEAD:refs/heads/{bottle.branch}", "doomed").returncode == 0
    assert bottle.upstream_head() and bottle.up.ref("refs/tags/doomed")
    proc = bottle.push("--delete", bottle.branch, "doomed")
    assert proc.returncode == 0, proc.stderr
    assert bottle.upstream_head() is None
    assert bottle.up.ref("refs/tags/doomed") is None


def test_force_push_does_not_overwrite_upstream_work_the_agent_never_saw(bottle: Bottle) -> None:
    # Forced updates carry a lease on the value the agent saw.
    bottle.commit({"a.txt": "one\n"})
    assert bottle.push().returncode == 0
    theirs = bottle.up.commit({"theirs.txt": "x\n"}, "pushed by someone else", bottle.branch)
    bottle.git("reset", "-q", "--hard", "HEAD~1")
    bottle.commit({"a.txt": "rewritten\n"})
    proc = bottle.push("--force", f"HEAD:refs/heads/{bottle.branch}")
    assert proc.returncode != 0
    assert "did not accept the push" in proc.stderr
    assert bottle.upstream_head() == theirs


def test_upstream_rejection_is_reported_to_the_agent(bottle: Bottle) -> None:
    # The upstream moved on after the agent's last fetch; the gate does not
    # know yet, accepts the fast-forward, and the upstream refuses it.
    assert bottle.push().returncode == 0
    theirs = bottle.up.commit({"theirs.txt": "x\n"}, "someone else's commit", bottle.branch)
    bottle.commit({"mine.txt": "y\n"})
    proc = bottle.push()
    assert proc.returncode != 0
    assert "did not accept the push" in proc.stderr
    assert f"refs/heads/{bottle.branch}" in proc.stderr
    assert bottle.upstream_head() == theirs


def test_wrong_host_key_refuses_to_forward(
    tmp_path: Path,
    sshd: Sshd,
    make_upstream: Callable[..., Upstream],
    make_gate: Callable[..., Gate],
) -> None:
    up = make_upstream("app")
    other = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    gate = make_gate([("app", up)], host_key=(tmp_path / "impostor.pub").read_text())
    work = tmp_path / "work"
    gate.git("init", "-q", "-b", "topic", str(work))
    gate.commit(work, {"f.txt": "hello\n"}, "topic")
    accepted = sshd.log.read_text().count("Accepted publickey")
    proc = gate.git("push", up.url, "topic", cwd=work, check=False)
    assert proc.returncode != 0
    assert "Host key verification failed" in proc.stderr
    assert up.ref("refs/heads/topic") is None
    assert sshd.log.read_text().count("Accepted publickey") == accepted


def test_first_push_to_an_empty_upstream_lands(gated_clone: GatedClone) -> None:
    up, gate, clone = gated_clone("fresh", empty=True)  # an empty clone, not an error
    gate.git("symbolic-ref", "HEAD", "refs/heads/main", cwd=clone)
    gate.commit(clone, {"f.txt": "first\n"}, "first")
    proc = gate.push(clone)
    assert proc.returncode == 0, proc.stderr
    assert up.head() == gate.git("rev-parse", "HEAD", cwd=clone).stdout.strip()


def test_push_is_refused_when_no_detector_is_installed(sshd: Sshd, gated_clone: GatedClone) -> None:
    # An unscanned push never leaves: no detectors means no forwarding.
    _, gate, clone = gated_clone(plugins="")
    gate.commit(clone, {"f.txt": "clean\n"}, "clean")
    before = sshd.connections()
    proc = gate.push(clone)
    assert proc.returncode != 0
    assert "the secret scan could not run (no DLP detector is installed" in proc.stderr
    assert sshd.connections() == before


def test_a_bottle_secret_is_refused_however_it_is_encoded(
    tmp_path: Path, sshd: Sshd, gated_clone: GatedClone
) -> None:
    """A value of the bottle's own (a ``?prompt`` answer, a ``${HOST_VAR}``)
    matches no token pattern, but the agent can read it: the gate gets it as
    ``GITGATE_SECRET_<n>`` and the known_secrets detector refuses a push
    that carries it, verbatim or encoded, before the upstream is contacted."""
    import base64

    value = "correct-horse-" + "battery-staple-42"
    up, gate, clone = gated_clone(plugins="dlp", extra_env={"GITGATE_SECRET_0": value})
    encoded = [value, base64.b64encode(value.encode()).decode()]
    for i, text in enumerate(encoded):
        gate.commit(clone, {f"f{i}.txt": f"note = {text}\n"}, f"note {i}")
        before = sshd.connections()
        proc = gate.push(clone)
        assert proc.returncode != 0, proc.stderr
        assert "known-secret" in proc.stderr
        assert value not in proc.stderr and text not in proc.stderr
        assert sshd.connections() == before
        if i == 0:
            gate.git("reset", "-q", "--hard", "HEAD~1", cwd=clone)
    assert value not in gate.log_text()
    # Without the slot the same text is ordinary, and the push lands.
    control = start_gate(tmp_path / "control", sshd, [("app", up)], plugins="dlp")
    try:
        proc = control.git("push", up.url, "HEAD:main", cwd=clone, check=False)
        assert proc.returncode == 0, proc.stderr
    finally:
        control.stop()


def test_a_replace_ref_cannot_hide_a_secret_commit_from_the_scan(bottle: Bottle) -> None:
    """``git log`` honours ``refs/replace/*``: once a replace ref for a commit
    sits in the mirror, the scan would read the innocent replacement while
    ``git push`` (which ignores replace refs) sends the real commit upstream."""
    leaked = bottle.commit({"deploy/key.env": f"key={SECRETS['github-token']}\n"}, "leak")
    bottle.git("reset", "-q", "--hard", "HEAD~1")
    decoy = bottle.commit({"notes.txt": "nothing to see\n"}, "decoy")
    first = bottle.push(f"{decoy}:refs/replace/{leaked}")
    assert first.returncode == 0, first.stderr
    proc = bottle.push(f"{leaked}:refs/heads/{bottle.branch}")
    assert proc.returncode != 0, proc.stderr
    assert f"testsecrets/github-token in commit {leaked[:12]} file deploy/key.env" in proc.stderr
    assert bottle.upstream_head() is None


@pytest.mark.parametrize("field", ["author", "committer"])
def test_a_secret_in_a_commit_header_is_rejected(bottle: Bottle, field: str) -> None:
    """Author and committer names and e-mails travel upstream with the commit:
    they are scanned like its message."""
    token = SECRETS["github-token"]
    var = "GIT_AUTHOR_NAME" if field == "author" else "GIT_COMMITTER_NAME"
    (bottle.clone / "notes.txt").write_text("hello\n")
    bottle.git("add", "-A")
    git(
        "commit",
        "-q",
        "-m",
        "innocent",
        cwd=bottle.clone,
        env={**bottle.gate.agent_env, var: token},
    )
    sha = bottle.git("rev-parse", "HEAD").stdout.strip()
    before_conns = bottle.sshd.connections()
    proc = bottle.push()
    assert proc.returncode != 0, proc.stderr
    assert f"testsecrets/github-token in commit {sha[:12]} (commit header)" in proc.stderr
    assert token not in proc.stderr
    assert bottle.upstream_head() is None
    assert bottle.sshd.connections() == before_conns


def test_a_secret_in_an_annotated_tags_header_is_rejected(bottle: Bottle) -> None:
    """The tagger line (and the tag name inside the tag object, which need not
    match the ref it is pushed as) are scanned, not only the tag message."""
    token = SECRETS["github-token"]
    tag = f"v-{bottle.branch}"
    env = {**bottle.gate.agent_env, "GIT_COMMITTER_NAME": token}
    git("tag", "-a", "-m", "release", tag, cwd=bottle.clone, env=env)
    proc = bottle.push(f"refs/tags/{tag}")
    assert proc.returncode != 0, proc.stderr
    assert "testsecrets/github-token" in proc.stderr
    assert token not in proc.stderr
    assert bottle.up.ref(f"refs/tags/{tag}") is None


def test_a_secret_in_a_nested_annotated_tag_is_rejected(bottle: Bottle) -> None:
    """A tag of a tag: the inner tag object goes upstream with the outer one,
    so its message is scanned too."""
    token = SECRETS["github-token"]
    inner, outer = f"in-{bottle.branch}", f"out-{bottle.branch}"
    bottle.git("tag", "-a", "-m", f"token {token}", inner)
    bottle.git("tag", "-a", "-m", "release", outer, inner)
    bottle.git("tag", "-d", inner)
    proc = bottle.push(f"refs/tags/{outer}")
    assert proc.returncode != 0, proc.stderr
    assert "testsecrets/github-token" in proc.stderr
    assert token not in proc.stderr
    assert bottle.up.ref(f"refs/tags/{outer}") is None


def _hand_made_commit(bottle: Bottle, rest: bytes, *, literally: bool = False) -> str:
    """Write a commit object byte for byte (``git commit`` would never make
    it): HEAD's tree and parent, an author and committer, then ``rest``
    (more headers, the blank line, the message). Its sha."""
    tree = bottle.git("rev-parse", "HEAD^{tree}").stdout.strip()
    parent = bottle.git("rev-parse", "HEAD").stdout.strip()
    head = (
        f"tree {tree}\nparent {parent}\nauthor A <a@a.test> 0 +0000\n"
        "committer A <a@a.test> 0 +0000\n"
    )
    argv = ["git", "hash-object", "-t", "commit", "-w", "--stdin"]
    made = subprocess.run(
        [*argv, *(["--literally"] if literally else [])],
        cwd=bottle.clone, env=bottle.gate.agent_env, input=head.encode() + rest,
        capture_output=True, check=True,
    )  # fmt: skip
    return made.stdout.decode().strip()


def test_a_secret_in_an_extra_commit_header_is_rejected(bottle: Bottle) -> None:
    """fsck checks the leading tree/parent lines only: a later header line may
    say anything, even start like one of those."""
    token = SECRETS["github-token"]
    sha = _hand_made_commit(bottle, f"parent {token}\n\ninnocent\n".encode())
    proc = bottle.push(f"{sha}:refs/heads/{bottle.branch}")
    assert proc.returncode != 0, proc.stderr
    assert f"testsecrets/github-token in commit {sha[:12]} (commit header)" in proc.stderr
    assert bottle.upstream_head() is None


def test_a_secret_after_a_nul_in_a_commit_message_is_rejected(bottle: Bottle) -> None:
    """git log's %B would stop at a NUL byte while the raw message goes upstream
    whole: the mirrors' receive.fsckObjects refuses such a commit (nulInCommit)."""
    token = SECRETS["github-token"]
    sha = _hand_made_commit(bottle, f"\ninnocent\n\0{token}\n".encode(), literally=True)
    proc = bottle.push(f"{sha}:refs/heads/{bottle.branch}")
    # receive-pack may reset the connection before the client reads why.
    assert proc.returncode != 0, proc.stderr
    assert bottle.upstream_head() is None


def test_a_secret_in_a_message_with_an_odd_encoding_is_rejected(bottle: Bottle) -> None:
    """``encoding IBM037``: git log turns the message into nothing readable,
    while the raw bytes (the token in plain ASCII) go upstream."""
    token = SECRETS["github-token"]
    sha = _hand_made_commit(bottle, f"encoding IBM037\n\n{token}\n".encode())
    proc = bottle.push(f"{sha}:refs/heads/{bottle.branch}")
    assert proc.returncode != 0, proc.stderr
    assert f"testsecrets/github-token in commit {sha[:12]} (commit message)" in proc.stderr
    assert bottle.upstream_head() is None


def test_an_operator_allowed_finding_passes_and_a_bad_allow_list_allows_nothing(
    tmp_path: Path, gated_clone: GatedClone
) -> None:
    import re

    from bot_bottle.gitgate import allow

    allow_dir = tmp_path / "allow"
    allow_dir.mkdir()
    up, gate, clone = gated_clone(allow_file=allow_dir / allow.ALLOW_FILE)
    gate.commit(clone, {"example.env": f"key={SECRETS['github-token']}\n"}, "example")
    refused = gate.push(clone, "HEAD:refs/heads/ex")
    assert refused.returncode != 0
    (fid,) = re.findall(r"\[finding (gf-[0-9a-f]{20})\]", refused.stderr)
    # A list that does not validate (here: an unknown key) allows nothing.
    (allow_dir / allow.ALLOW_FILE).write_text(
        json.dumps({"schema_version": 1, "entries": [], "everything": True})
    )
    again = gate.push(clone, "HEAD:refs/heads/ex")
    assert again.returncode != 0 and fid in again.stderr
    (allow_dir / allow.ALLOW_FILE).unlink()
    allow.add(allow_dir, fid, comment="an example in the docs")
    passed = gate.push(clone, "HEAD:refs/heads/ex")
    assert passed.returncode == 0, passed.stderr
    assert "allowed by the operator: testsecrets/github-token" in passed.stderr
    assert up.ref("refs/heads/ex") == gate.git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    assert SECRETS["github-token"] not in passed.stderr
