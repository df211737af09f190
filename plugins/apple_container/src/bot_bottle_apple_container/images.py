"""``container build`` of the same build specs the Docker backend builds.

The engine-neutral half (fingerprint, wheelhouse, CA option) is core's
:mod:`bot_bottle.imagebuild`; the agent image's spec is the plan's
``agent_image_spec`` and the bundle's is
:func:`bot_bottle_sidecars.bundle.bundle_spec`. Nothing here imports the
Docker backend: the base image is looked up with ``container image
inspect`` and built with ``container build`` (apple/container
docs/command-reference.md: ``-t/--tag``, ``-f/--file``, ``--build-arg``,
``-l/--label``, ``--no-cache``, ``--progress plain``, CONTEXT-DIR).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shutil
import tempfile
from pathlib import Path

from bot_bottle.imagebuild import (
    CONTEXT_CA,
    CONTEXT_WHEELHOUSE,
    FINGERPRINT_LABEL,
    MANAGED_LABEL,
    ImageBuildError,
    ImageResult,
    ImageSpec,
    Progress,
    check_ca,
    dependency_closure,
    fingerprint,
    make_wheelhouse,
)
from bot_bottle.paths import home_dir
from bot_bottle_apple_container.cli import ContainerCLI


def image_id(cli: ContainerCLI, ref: str) -> str | None:
    """A stable identity of image ``ref`` (its index digest), None when absent."""
    proc = cli.run("image", "inspect", ref, check=False)
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout or b"null")
    except ValueError:
        raise ImageBuildError(
            f"'container image inspect {ref}' printed something not JSON"
        ) from None
    first = data[0] if isinstance(data, list) and data else data
    if not isinstance(first, dict):
        return None
    index = first.get("index")
    digest = index.get("digest") if isinstance(index, dict) else None
    if digest:
        return str(digest)
    # No digest field in this CLI version: the inspect document itself
    # identifies the image (it changes when the image does).
    return "sha256:" + hashlib.sha256(json.dumps(first, sort_keys=True).encode()).hexdigest()


def _machine() -> str:
    # Wheels name Apple silicon's Linux guests aarch64; macOS says arm64.
    m = platform.machine()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(m, m)


def ensure_image(
    spec: ImageSpec,
    *,
    cli: ContainerCLI | None = None,
    progress: Progress | None = None,
    force: bool = False,
    log_dir: Path | None = None,
) -> ImageResult:
    say = progress or (lambda _line: None)
    engine = cli or ContainerCLI()
    if not spec.dockerfile.is_file():
        raise ImageBuildError(f"the Dockerfile {spec.dockerfile} does not exist")
    base_id = image_id(engine, spec.base_image)
    if base_id is None:
        raise ImageBuildError(
            f"base image {spec.base_image} is not present in Apple's container image store",
            hint="load it ('docker save bot-bottle/base:trixie -o base.tar' on a Docker host, "
            "then 'container image load -i base.tar'), or set BOT_BOTTLE_BASE_IMAGE",
        )
    if spec.target.machine != _machine():
        spec = dataclasses.replace(
            spec, target=dataclasses.replace(spec.target, machine=_machine())
        )
    closure = dependency_closure(spec.distributions)
    digest = fingerprint(spec, base_id, closure)
    tag = f"{spec.repository}:{digest[:16]}"
    if not force and image_id(engine, tag) is not None:
        say(f"using image {tag} (up to date)")
        return ImageResult(tag, built=False, log_path=None)
    logs = log_dir or home_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"build-{spec.repository.replace('/', '-')}-{digest[:16]}.log"
    say(f"building image {tag} with container build (log: {log_path})")
    with (
        log_path.open("w", encoding="utf-8") as log,
        tempfile.TemporaryDirectory(prefix="bot-bottle-build-") as tmp,
    ):
        context = Path(tmp)
        shutil.copyfile(spec.dockerfile, context / "Dockerfile")
        (context / CONTEXT_CA).write_bytes(check_ca(spec.extra_ca))
        if spec.distributions:
            make_wheelhouse(spec, closure, context / CONTEXT_WHEELHOUSE, log, log_path, say)
        else:
            (context / CONTEXT_WHEELHOUSE).mkdir()
        args = ["build", "--progress", "plain", "-t", tag, "-f", str(context / "Dockerfile")]
        for key, value in {"BASE_IMAGE": spec.base_image, **spec.build_args}.items():
            args += ["--build-arg", f"{key}={value}"]
        for key, value in {FINGERPRINT_LABEL: digest, MANAGED_LABEL: "true"}.items():
            args += ["--label", f"{key}={value}"]
        args.append(str(context))
        log.write("$ container " + " ".join(args) + "\n")
        log.flush()
        proc = engine.run(*args, check=False)
        log.write(proc.stdout.decode("utf-8", "replace"))
        log.write(proc.stderr.decode("utf-8", "replace"))
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        raise ImageBuildError(
            f"container build of {tag} failed (exit {proc.returncode}): " + " | ".join(tail)[-400:],
            hint=f"the full build output is in {log_path}",
        )
    say(f"built image {tag}")
    return ImageResult(tag, built=True, log_path=log_path)
