"""Fault 7 (identity): two real non-root users on one machine and one
engine, each running a bottle from their own home. One user's ``list
active`` and ``cleanup`` leave the other's running bottle alone (its
containers, its network, its state dir, its launcher), and each reaps only
its own orphan.

The users are created for the test (``useradd``) and removed after, with
everything they ran. They reach the engine as members of the ``docker``
group (the group membership goes with the user). The project's interpreter
lives under /root (0700): rather than opening /root, the test bind-mounts
the interpreter read-only at a path they can reach (its libpython is found
through ``LD_LIBRARY_PATH``, its RUNPATH naming /root) and gives them a
venv whose one ``.pth`` adds this checkout's site-packages.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root"),
]

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SHELL_BOTTLE = "---\nagent_provider:\n  template: shell\n---\n"


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path
    env: dict[str, str]
    python: str

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.python, "-m", "bot_bottle", *args], env=self.env, cwd=self.home, user=self.uid,
            group=self.gid, extra_groups=[grp.getgrnam("docker").gr_gid], text=True, **kw,
        )  # fmt: skip

    def bb(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        proc = self.popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    @property
    def state(self) -> Path:
        return self.home / ".bot-bottle" / "state"


@contextlib.contextmanager
def _interpreter() -> Iterator[tuple[str, str]]:
    """(python, LD_LIBRARY_PATH) any user can run, with this checkout's packages."""
    real = Path(sys.base_prefix)
    tmp = Path(tempfile.mkdtemp(prefix="bbu-", dir="/tmp"))
    tmp.chmod(0o755)
    mnt = tmp / "py"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(real), str(mnt)], check=True)
    try:
        lib = str(mnt / "lib")
        exe = mnt / "bin" / Path(sys._base_executable).name  # type: ignore[attr-defined]
        venv = tmp / "venv"
        env = {**os.environ, "LD_LIBRARY_PATH": lib}
        subprocess.run([str(exe), "-m", "venv", "--without-pip", str(venv)], env=env, check=True)
        site = Path(sysconfig.get_paths()["purelib"])
        pth = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
        (pth / "bot_bottle_test.pth").write_text(f"import site; site.addsitedir({str(site)!r})\n")
        yield str(venv / "bin" / "python"), lib
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def _their_processes(uid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if proc.stat().st_uid == uid:
                    found.append(int(proc.name))
    return found


@pytest.fixture
def users(docker_client: Any, base_image: str) -> Iterator[tuple[User, User]]:
    from bot_bottle.state import home_id

    tag = secrets.token_hex(3)
    names = [f"bbf20a{tag}", f"bbf20b{tag}"]
    made: list[User] = []
    with _interpreter() as (python, lib):
        try:
            for name in names:
                subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name],
                               check=True)  # fmt: skip
                pw = pwd.getpwnam(name)
                home = Path(pw.pw_dir)
                env = {
                    "PATH": "/usr/local/bin:/usr/bin:/bin",
                    "HOME": str(home),
                    "USER": name,
                    "LD_LIBRARY_PATH": lib,
                    "LANG": "C.UTF-8",
                }
                if HOST_CA.exists():  # the same image tags as the rest of the suite
                    env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
                user = User(name, pw.pw_uid, pw.pw_gid, home, env, python)
                made.append(user)
                init = user.bb("init")
                assert init.returncode == 0, init.stderr
                bottles = home / ".bot-bottle" / "bottles"
                (bottles / "sh.md").write_text(SHELL_BOTTLE)
                (home / ".bot-bottle" / "agents" / "sh.md").write_text("---\nbottle: sh\n---\nx\n")
                for p in (bottles / "sh.md", home / ".bot-bottle" / "agents" / "sh.md"):
                    os.chown(p, user.uid, user.gid)
            yield made[0], made[1]
        finally:
            for user in made:
                for pid in _their_processes(user.uid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                flt = {"label": f"bot-bottle.home={home_id(user.state)}"}
                for c in docker_client.containers.list(all=True, filters=flt):
                    c.remove(force=True)
                for n in docker_client.networks.list(filters=flt):
                    n.remove()
            for name in names:
                subprocess.run(["userdel", "--remove", name], capture_output=True)


def _slug(user: User) -> str:
    (slug,) = [p.name for p in user.state.iterdir()]
    return slug


def _running(client: Any, slug: str) -> list[str]:
    flt = {"label": f"bot-bottle.slug={slug}"}
    return sorted(c.name for c in client.containers.list(filters=flt))


def test_one_users_list_and_cleanup_leave_the_other_users_bottles_alone(
    users: tuple[User, User], docker_client: Any, tmp_path: Path
) -> None:
    a, b = users
    logs = {u.name: (tmp_path / f"{u.name}.err").open("w") for u in users}
    procs = {u.name: u.popen("run", "sh", "--", "sleep", "600", stdout=subprocess.DEVNULL,
                             stderr=logs[u.name]) for u in users}  # fmt: skip
    slugs: dict[str, str] = {}
    deadline = time.monotonic() + 300
    for u in users:
        while True:
            err = (tmp_path / f"{u.name}.err").read_text()
            assert procs[u.name].poll() is None, err[-2000:]
            assert time.monotonic() < deadline, err[-2000:]
            if u.state.exists() and any(u.state.iterdir()):
                slug = _slug(u)
                agent = f"bb-{slug}-agent"
                with contextlib.suppress(Exception):
                    if "sleep 600" in str(docker_client.containers.get(agent).top()):
                        slugs[u.name] = slug
                        break
            time.sleep(0.3)
    sa, sb = slugs[a.name], slugs[b.name]
    assert len(_running(docker_client, sa)) == len(_running(docker_client, sb)) == 3

    # Each lists its own bottle with its sidecars' state; the other's home is
    # not read (0700, and not theirs): no daemons for it.
    for me, other in ((a, b), (b, a)):
        r = me.bb("list", "active", "--json")
        assert r.returncode == 0, r.stderr
        rows = {row["slug"]: row for row in json.loads(r.stdout)["active"]}
        assert rows[slugs[me.name]]["daemons"], rows
        assert rows.get(slugs[other.name], {"daemons": []})["daemons"] == [], rows

    # With both launchers alive, neither cleanup touches anything.
    for me in users:
        r = me.bb("cleanup", "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert sa not in r.stdout and sb not in r.stdout, r.stdout
    assert len(_running(docker_client, sa)) == len(_running(docker_client, sb)) == 3

    # A's launcher dies: A's cleanup reaps A's bottle and only A's.
    procs[a.name].kill()
    procs[a.name].wait()
    r = a.bb("cleanup", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sa in r.stdout and sb not in r.stdout, r.stdout
    assert _running(docker_client, sa) == []
    assert not (a.state / sa).exists()
    assert docker_client.networks.list(filters={"label": f"bot-bottle.slug={sa}"}) == []
    assert len(_running(docker_client, sb)) == 3
    assert procs[b.name].poll() is None
    assert (b.state / sb / "metadata.json").exists()
    r = b.bb("list", "active", "--json")
    row = next(x for x in json.loads(r.stdout)["active"] if x["slug"] == sb)
    # Healthy: supervise starts on the agent's first call (init's on_demand),
    # so it is idle here; the others run.
    assert {d["state"] for d in row["daemons"]} <= {"running", "idle"}, row

    # B ends its bottle (SIGTERM to its launcher, which tears down; a killed
    # agent is kept for resume), then removes what it kept: nothing is left.
    procs[b.name].send_signal(signal.SIGTERM)
    procs[b.name].wait(timeout=120)
    r = b.bb("cleanup", "--yes", "--preserved")
    assert r.returncode == 0, r.stdout + r.stderr
    flt = {"label": f"bot-bottle.slug={sb}"}
    assert docker_client.containers.list(all=True, filters=flt) == []
    assert docker_client.networks.list(filters=flt) == []
    assert not (b.state / sb).exists()
    for f in logs.values():
        f.close()
