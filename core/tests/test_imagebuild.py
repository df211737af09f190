"""The image builder's pure parts: fingerprints, the CA option, repacked wheels."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bot_bottle.imagebuild import (
    ImageBuildError,
    ImageSpec,
    InstalledDist,
    Target,
    dependency_closure,
    extra_ca_from_env,
    fingerprint,
    repack_installed,
)

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _spec(tmp_path: Path, dockerfile: str = "FROM x\n", ca: bytes | None = None) -> ImageSpec:
    df = tmp_path / "Dockerfile"
    df.write_text(dockerfile)
    ca_path = None
    if ca is not None:
        ca_path = tmp_path / "ca.pem"
        ca_path.write_bytes(ca)
    return ImageSpec(
        repository="t/img", dockerfile=df, distributions=("bot-bottle",), base_image="b",
        extra_ca=ca_path,
    )  # fmt: skip


def test_fingerprint_is_stable_for_the_same_inputs(tmp_path: Path) -> None:
    closure = dependency_closure(["bot-bottle"])
    spec = _spec(tmp_path)
    assert fingerprint(spec, "sha256:base", closure) == fingerprint(spec, "sha256:base", closure)


def test_fingerprint_changes_with_dockerfile_base_ca_and_versions(tmp_path: Path) -> None:
    closure = dependency_closure(["bot-bottle"])
    first = fingerprint(_spec(tmp_path), "sha256:base", closure)
    assert fingerprint(_spec(tmp_path, "FROM y\n"), "sha256:base", closure) != first
    assert fingerprint(_spec(tmp_path), "sha256:other", closure) != first
    assert fingerprint(_spec(tmp_path, ca=PEM), "sha256:base", closure) != first
    fewer = {k: v for k, v in closure.items() if k != "pydantic"}
    assert fingerprint(_spec(tmp_path), "sha256:base", fewer) != first


def test_closure_holds_our_distribution_and_its_dependencies() -> None:
    closure = dependency_closure(["bot-bottle"])
    assert {"bot-bottle", "pluggy", "pydantic", "structlog", "pydantic-core"} <= set(closure)
    assert "pytest" not in closure


def test_a_ca_bundle_without_a_certificate_is_refused_with_a_hint(tmp_path: Path) -> None:
    spec = _spec(tmp_path, ca=b"not a certificate")
    with pytest.raises(ImageBuildError, match="no PEM certificate") as info:
        fingerprint(spec, "b", {})
    assert info.value.hint


def test_a_missing_ca_bundle_is_a_clear_error(tmp_path: Path) -> None:
    spec = ImageSpec("t/i", tmp_path / "Dockerfile", (), "b", extra_ca=tmp_path / "nope.pem")
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    with pytest.raises(ImageBuildError, match="cannot read the CA bundle"):
        fingerprint(spec, "b", {})


def test_ca_bundle_option_comes_from_the_environment() -> None:
    assert extra_ca_from_env({"BOT_BOTTLE_BUILD_CA_BUNDLE": "/x.pem"}) == Path("/x.pem")
    assert extra_ca_from_env({}) is None


def test_target_asks_pip_for_binary_wheels_of_the_images_python() -> None:
    args = Target(python_version="3.13", machine="aarch64").pip_args()
    assert "--only-binary=:all:" in args
    assert args[args.index("--abi") + 1] == "cp313"
    assert "manylinux_2_17_aarch64" in args and "manylinux2014_aarch64" in args
    assert not any(a.startswith("linux_") for a in args)


def test_an_installed_distribution_is_repacked_into_an_installable_wheel(tmp_path: Path) -> None:
    uv = str(Path(sys.executable).parent / "uv")
    # structlog is installed from a wheel (not editable): it stands for a
    # third-party plugin that exists only as installed files on the host.
    dist = InstalledDist.find("structlog")
    assert dist.source is None
    wheel = repack_installed(dist, tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "structlog/__init__.py" in names
    assert not any("__pycache__" in n for n in names)
    target = tmp_path / "site"
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
    )
    out = subprocess.run(
        [sys.executable, "-c", "import structlog, sys; print(structlog.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(target)},
    )
    assert out.stdout.startswith(str(target))


def test_an_unknown_distribution_is_a_clear_error() -> None:
    with pytest.raises(ImageBuildError, match="not installed") as info:
        InstalledDist.find("bot-bottle-no-such-plugin")
    assert info.value.hint


def test_the_same_wheel_installed_from_two_paths_has_one_content_digest(tmp_path: Path) -> None:
    uv = str(Path(sys.executable).parent / "uv")
    wheel = repack_installed(InstalledDist.find("structlog"), tmp_path)
    digests = []
    for where in ("a", "b"):
        moved = tmp_path / where / wheel.name
        moved.parent.mkdir()
        moved.write_bytes(wheel.read_bytes())
        site = tmp_path / f"site-{where}"
        subprocess.run(
            [uv, "pip", "install", "-q", "--no-deps", "--target", str(site), str(moved)],
            check=True,
        )
        from importlib.metadata import distributions

        (found,) = [d for d in distributions(path=[str(site)]) if d.metadata["Name"] == "structlog"]
        digests.append(InstalledDist("structlog", found.version, None, found).content_digest())
    assert digests[0] == digests[1]


def test_the_closure_reads_what_the_full_metadata_parse_reads() -> None:
    """find() parses only the metadata's headers (the body is the long
    description); every name, version and requirement it finds must be what
    importlib.metadata's full parse says."""
    from bot_bottle.imagebuild import dependency_closure

    closure = dependency_closure(["bot-bottle-sidecars"])
    assert len(closure) > 10  # mitmproxy and its dependencies
    for dist in closure.values():
        assert dist.requires is not None
        full = dist.dist.metadata
        assert (dist.name, dist.version) == (full["Name"], full["Version"])
        assert sorted(dist.requires) == sorted(dist.dist.requires or ())
