"""Exec over the real websocket protocol (the official client against the fake's
``pods/exec``, Kubernetes 1.33 channel protocols v4 and v5): exit codes,
stdin, TTY resize; and tar in and out of a pod with path traversal refused.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import K8S_VERSION, ExecSession, FakeApiServer
from k8s_cluster_kit import NAMESPACE, PodShell, kube_for

from bot_bottle.errors import BotBottleError
from bot_bottle_kubernetes import interactive, transfer
from bot_bottle_kubernetes.cluster import KubeError, exit_code
from bot_bottle_kubernetes.launcher import KubeRunningBottle

assert K8S_VERSION.startswith("1.33")

POD = "bb-s-agent"


def _pod(fake: FakeApiServer) -> None:
    fake.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": POD, "namespace": NAMESPACE},
            "spec": {"containers": [{"name": "agent", "image": "a:1"}]},
        }
    )


@pytest.fixture
def bottle(fake: FakeApiServer, tmp_path: Path) -> KubeRunningBottle:
    _pod(fake)
    return KubeRunningBottle("s", kube_for(fake, tmp_path), POD, user="agent")


@pytest.mark.parametrize("code", [0, 1, 3, 127, 137])
def test_exit_codes_come_from_the_error_channel(
    fake: FakeApiServer, bottle: KubeRunningBottle, code: int
) -> None:
    def handler(session: ExecSession) -> int:
        session.stdout(b"out:" + " ".join(session.argv).encode())
        session.stderr(b"err")
        return code

    fake.exec_handler = handler
    result = bottle.exec(["do", "it"], user="root")
    assert (result.exit_code, result.stdout, result.stderr) == (code, b"out:do it", b"err")
    assert fake.exec_log[-1].protocol == "v5.channel.k8s.io"


def _run_here(session: ExecSession) -> int:
    """Run the exec's argv on this machine (what the container would run),
    so the env wrapper is tested in a real POSIX shell."""
    proc = subprocess.run(
        session.argv,
        input=session.read_stdin(),
        capture_output=True,
        env={"PATH": os.environ["PATH"]},
        check=False,
    )
    session.stdout(proc.stdout)
    session.stderr(proc.stderr)
    return proc.returncode


def test_env_goes_through_stdin_never_the_exec_url(
    fake: FakeApiServer, bottle: KubeRunningBottle, tmp_path: Path
) -> None:
    fake.exec_handler = _run_here
    bottle.exec_env = {"SECRET_TOKEN": "tok-3f9a\nline2\n"}
    result = bottle.exec(
        ["sh", "-c", 'printf "[%s][%s][%s]" "$SECRET_TOKEN" "$A" "$PWD"; wc -c'],
        user="root",
        env={"A": "1; rm -rf / $(id)"},
        workdir=str(tmp_path),
        stdin=b"x" * 200_000,
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.decode().split() == [
        "[tok-3f9a",
        "line2",
        "][1;",
        "rm",
        "-rf",
        "/",
        f"$(id)][{tmp_path}]200000",
    ]
    # No value in the exec's URL (the API server's audit log would keep it).
    urls = " ".join(str(q) for m, p, q in fake.requests if p.endswith("/exec"))
    assert "tok-3f9a" not in urls and "rm -rf" not in urls
    assert fake.exec_log[-1].argv[:2] == ["sh", "-c"]
    with pytest.raises(BotBottleError, match="invalid environment variable"):
        bottle.exec(["true"], env={"A=B": "x"})


def test_exec_runs_as_the_agent_user_in_the_workdir(
    fake: FakeApiServer, bottle: KubeRunningBottle
) -> None:
    seen: list[list[str]] = []

    def handler(session: ExecSession) -> int:
        seen.append(session.argv)
        return 0

    fake.exec_handler = handler
    bottle.exec(["id"], workdir="/workspace")
    assert seen == [["runuser", "-u", "agent", "--", "env", "-C", "/workspace", "id"]]


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[f"k8s-{K8S_VERSION}"])
def test_on_a_tty_the_wrapper_turns_echo_off_before_reading_values(
    version: str, tmp_path: Path
) -> None:
    """The wrapper in a real shell on a real pseudo-terminal: the values are
    read with echo off, so they never show on the user's screen."""
    import pty
    import select

    from bot_bottle_kubernetes.interactive import MARKER
    from bot_bottle_kubernetes.launcher import ENV_WRAPPER

    bottle = KubeRunningBottle("s", None, "p", user="root", exec_env={"TOKEN": "s3cr3t-value"})  # type: ignore[arg-type]
    argv, preamble = bottle.command(["sh", "-c", 'printf "<%s>" "$TOKEN"'])
    assert argv[:3] == ["sh", "-c", ENV_WRAPPER]
    fd, child = pty.openpty()
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    out = b""
    sent = False
    while True:
        ready, _, _ = select.select([fd], [], [], 10)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child side closed
            break
        if not chunk:
            break
        out += chunk
        if not sent and MARKER in out:
            os.write(fd, preamble)
            sent = True
    proc.wait(timeout=10)
    os.close(fd)
    assert sent
    assert b"<s3cr3t-value>" in out
    assert b"s3cr3t-value" not in out.replace(b"<s3cr3t-value>", b"")
    assert preamble.split(b"=")[1].strip() not in out  # the base64 line was not echoed


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[f"k8s-{K8S_VERSION}"])
def test_a_lost_or_broken_status_is_an_error_not_an_exit_code(version: str) -> None:
    with pytest.raises(KubeError, match="connection to the pod was lost"):
        exit_code(b"")
    with pytest.raises(KubeError, match="container not found"):
        exit_code(b'{"status":"Failure","reason":"InternalError","message":"container not found"}')
    with pytest.raises(KubeError, match="unreadable"):
        exit_code(b"not json")
    assert exit_code(b'{"metadata":{},"status":"Success"}') == 0


def test_exec_in_a_missing_pod_is_a_clear_error(
    fake: FakeApiServer, bottle: KubeRunningBottle, tmp_path: Path
) -> None:
    gone = KubeRunningBottle("s", kube_for(fake, tmp_path), "no-such-pod", user="root")
    with pytest.raises(KubeError, match="cannot exec in pod no-such-pod") as err:
        gone.exec(["true"])
    assert err.value.hint


def test_v4_servers_work_too(fake: FakeApiServer, bottle: KubeRunningBottle) -> None:
    """A server that offers only v4 (no stdin close): sized stdin still works."""
    import kubernetes.stream.ws_client as wsc

    original = wsc.create_websocket

    def v4_only(configuration: Any, url: str, headers: Any = None) -> Any:
        return original(configuration, url, {"sec-websocket-protocol": wsc.V4_CHANNEL_PROTOCOL})

    def handler(session: ExecSession) -> int:
        session.stdout(b"v4")
        return 5

    fake.exec_handler = handler
    wsc.create_websocket = v4_only
    try:
        result = bottle.exec(["x"])
    finally:
        wsc.create_websocket = original
    assert (result.exit_code, result.stdout) == (5, b"v4")
    assert fake.exec_log[-1].protocol == "v4.channel.k8s.io"


def test_tty_session_sends_size_and_resizes_and_returns_the_code(
    fake: FakeApiServer, bottle: KubeRunningBottle
) -> None:
    got_input = threading.Event()

    def handler(session: ExecSession) -> int:
        assert session.tty
        data = session.read_stdin(timeout=10)
        got_input.set()
        session.stdout(b"echo:" + data)
        return 42

    fake.exec_handler = handler
    ws = bottle.kube.open_exec(POD, "agent", ["sh"], tty=True)
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    sizes = iter([(80, 24), (132, 50)])
    resized = threading.Event()
    resized.set()  # a SIGWINCH before the first loop
    os.write(w_in, b"hello")
    os.close(w_in)
    code = interactive.pump(
        ws, in_fd=r_in, out_fd=w_out, err_fd=w_out, size=lambda: next(sizes), resized=resized
    )
    os.close(w_out)
    out = os.read(r_out, 1000)
    assert code == 42
    assert out == b"echo:hello"
    assert fake.exec_log[-1].resizes == [
        {"Width": 80, "Height": 24},
        {"Width": 132, "Height": 50},
    ]
    assert fake.exec_log[-1].argv == ["sh"] and fake.exec_log[-1].tty


def test_attach_and_run_use_the_agent_user_and_return_the_code(
    fake: FakeApiServer, bottle: KubeRunningBottle, capfd: pytest.CaptureFixture[str]
) -> None:
    def handler(session: ExecSession) -> int:
        session.stdout(b"headless\n")
        return 9

    fake.exec_handler = handler
    assert bottle.run(["agent-cli", "-p", "hi"]) == 9
    assert fake.exec_log[-1].argv == ["runuser", "-u", "agent", "--", "agent-cli", "-p", "hi"]
    assert not fake.exec_log[-1].tty
    assert "headless" in capfd.readouterr().out


# -- tar in and out ---------------------------------------------------------------


def test_copy_in_and_out_round_trip(
    fake: FakeApiServer, bottle: KubeRunningBottle, tmp_path: Path
) -> None:
    shell = PodShell(tmp_path / "pods")
    fake.exec_handler = shell
    src = tmp_path / "proj"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.txt").write_text("beta")
    (src / "link").symlink_to("sub/b.txt")
    bottle.seed_workspace(src, "/workspace")
    landed = tmp_path / "pods" / POD / "workspace"
    assert (landed / "a.txt").read_text() == "alpha"
    assert (landed / "link").readlink() == Path("sub/b.txt")
    assert ["chown", "-R", "agent", "/workspace"] in shell.calls
    back = tmp_path / "back"
    bottle.copy_out("/workspace", back)
    assert (back / "sub" / "b.txt").read_text() == "beta"


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[f"k8s-{K8S_VERSION}"])
def test_copy_in_refuses_a_symlink_out_of_the_tree(version: str, tmp_path: Path) -> None:
    src = tmp_path / "proj"
    src.mkdir()
    (src / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(transfer.UnsafeArchiveError, match="leaves"):
        transfer.pack(src, "proj")
    (src / "passwd").unlink()
    (src / "up").symlink_to("../../secret")
    with pytest.raises(transfer.UnsafeArchiveError, match="leaves"):
        transfer.pack(src, "proj")


def _tar(*members: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            if m.isfile():
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))
            else:
                tar.addfile(m)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([_member("../escape")], "escapes"),
        ([_member("/etc/cron.d/x")], "escapes"),
        ([_member("out/../../x")], "escapes"),
        ([_member("out/link", tarfile.SYMTYPE, "../../../etc/passwd")], "points outside"),
        ([_member("out/link", tarfile.SYMTYPE, "/etc/passwd")], "points outside"),
        ([_member("out/hard", tarfile.LNKTYPE, "../../etc/shadow")], "points outside"),
        ([_member("out/dev", tarfile.CHRTYPE)], "device or fifo"),
        ([_member("out/fifo", tarfile.FIFOTYPE)], "device or fifo"),
    ],
    ids=[
        "dotdot",
        "absolute",
        "nested-dotdot",
        "symlink-up",
        "symlink-abs",
        "hardlink",
        "chr",
        "fifo",
    ],
)
def test_copy_out_refuses_path_traversal_and_writes_nothing(
    fake: FakeApiServer,
    bottle: KubeRunningBottle,
    tmp_path: Path,
    members: list[tarfile.TarInfo],
    words: str,
) -> None:
    evil = _tar(_member("out/ok.txt"), *members)

    def handler(session: ExecSession) -> int:
        session.stdout(evil)
        return 0

    fake.exec_handler = handler
    dest = tmp_path / "dest" / "out"
    dest.parent.mkdir()
    with pytest.raises(transfer.UnsafeArchiveError, match=words) as err:
        bottle.copy_out("/workspace/out", dest)
    assert err.value.hint and "nothing was written" in err.value.hint
    assert list(dest.parent.iterdir()) == []
    assert not (tmp_path / "escape").exists()


def test_a_failed_copy_says_what_the_pod_said(
    fake: FakeApiServer, bottle: KubeRunningBottle, tmp_path: Path
) -> None:
    def handler(session: ExecSession) -> int:
        session.read_stdin()
        session.stderr(b"tar: /workspace: Read-only file system\n")
        return 2

    fake.exec_handler = handler
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(BotBottleError, match="Read-only file system"):
        bottle.copy_in(f, "/workspace/f")


def test_keep_for_resume_marks_the_bottle_for_the_teardown(bottle: KubeRunningBottle) -> None:
    # The teardown keeps the agent's changes (test_freezer.py runs it).
    assert not bottle.kept
    bottle.keep_for_resume()
    assert bottle.kept


def test_execs_and_rest_calls_from_several_threads_do_not_mix(
    fake: FakeApiServer, bottle: KubeRunningBottle
) -> None:
    """The client's ``stream()`` swaps ``call_api`` on the ApiClient it is
    given while it connects; on the launcher's shared client, a Lease
    renewal or another exec (the queue mirror's thread) in that window
    would go over a websocket, or leave the swap in place for good. Each
    exec gets its own ApiClient."""
    import threading

    fake.exec_handler = lambda session: 0
    kube = bottle.kube
    original = kube.api_client.call_api
    errors: list[BaseException] = []

    def execs() -> None:
        try:
            for _ in range(15):
                assert bottle.raw_exec(["true"], None).exit_code == 0
        except BaseException as e:  # reported below
            errors.append(e)

    def rest() -> None:
        try:
            for _ in range(60):
                assert kube.get("Pod", POD) is not None
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=f) for f in (execs, execs, rest, rest)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert kube.api_client.call_api == original
