"""The shared running-bottle kit: the tar ends of copy_in/copy_out, and the
once-only readiness wait."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from bot_bottle.backend_kit import BottleBase, copy_in_tar, unpack_copy_out
from bot_bottle.errors import BotBottleError


def test_one_file_goes_in_root_owned_with_its_mode(tmp_path: Path) -> None:
    src = tmp_path / "ca.crt"
    src.write_text("pem")
    src.chmod(0o600)
    data, applied = copy_in_tar(src, "/usr/local/share/ca.crt", 0o644)
    assert applied
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (info,) = tar.getmembers()
        assert (info.name, info.uid, info.gid, info.uname, info.mode) == (
            "ca.crt", 0, 0, "root", 0o644
        )  # fmt: skip


def test_a_directory_keeps_its_tree_and_leaves_the_mode_to_the_caller(tmp_path: Path) -> None:
    (tmp_path / "skills/a").mkdir(parents=True)
    (tmp_path / "skills/a/SKILL.md").write_text("x")
    data, applied = copy_in_tar(tmp_path / "skills", "/home/agent/.skills", 0o755)
    assert not applied
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == [".skills", ".skills/a", ".skills/a/SKILL.md"]


def test_copy_out_writes_a_file_or_renames_a_directory(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "d").mkdir(parents=True)
    (src / "d/f").write_text("inner")
    (src / "file").write_text("plain")
    for name, dest in (("file", tmp_path / "out-file"), ("d", tmp_path / "out-dir")):
        data, _ = copy_in_tar(src / name, f"/x/{name}", None)
        unpack_copy_out(data, f"/x/{name}", dest)
    assert (tmp_path / "out-file").read_text() == "plain"
    assert (tmp_path / "out-dir/f").read_text() == "inner"


def test_copy_out_of_nothing_is_a_clear_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w"):
        pass
    with pytest.raises(BotBottleError, match="came out of the bottle empty"):
        unpack_copy_out(buf.getvalue(), "/gone", tmp_path / "x")


def test_copy_out_refuses_a_member_leaving_dest(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("d")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        evil = tarfile.TarInfo("d/../../escaped")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    with pytest.raises(tarfile.OutsideDestinationError):
        unpack_copy_out(buf.getvalue(), "/d", tmp_path / "sub" / "d")
    assert not (tmp_path / "escaped").exists()


class _Bottle(BottleBase):
    def exec(self, argv, **kw):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError

    def copy_in(self, src, dest, **kw):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError

    def copy_out(self, src, dest):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError

    def attach(self, argv, **kw):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError

    def run(self, argv, **kw):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError


def test_wait_ready_runs_once_and_is_timed() -> None:
    calls: list[int] = []
    bottle = _Bottle("s-0a1b2c", wait_ready=lambda: calls.append(1))
    bottle.wait_ready()
    bottle.wait_ready()
    assert calls == [1]
    assert "sidecars_ready" in bottle.timings
    assert not bottle.kept
    bottle.keep_for_resume()
    assert bottle.kept
