"""The Docker engine's half of image building: ``docker build`` and pruning.

The engine-neutral half (fingerprint, wheelhouse, CA-bundle option) is core's
:mod:`bot_bottle.imagebuild`; this module runs the Docker CLI on the build
context it describes, and builds the three kinds of image a Docker bottle
boots: the sidecar bundle, a provider's agent image, and a resumed
snapshot's capability image. ``docker build`` runs with its output in a log
file whose path every error names; step lines are shown as progress.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bot_bottle.imagebuild import (
    CONTEXT_CA,
    CONTEXT_WHEELHOUSE,
    FINGERPRINT_LABEL,
    MANAGED_LABEL,
    STAGE_LABEL,
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

#: Managed images kept per repository (see DockerCLI.prune).
KEEP_IMAGES = 3
#: ... and never one younger than this (seconds).
PRUNE_MIN_AGE = 3600.0
#: The legacy builder's `` ---> <id>`` line: each step's image (short id).
_STAGE_ID_RE = re.compile(r"^ ---> ([0-9a-f]{12})$", re.M)
_STEP_RE = re.compile(r"^(Step \d+/\d+ :|#\d+ \[)")

__all__ = [
    "KEEP_IMAGES",
    "PRUNE_MIN_AGE",
    "STAGE_LABEL",
    "DockerCLI",
    "EngineChecks",
    "ImageBuildError",
    "ImageResult",
    "ImageSpec",
    "ensure_agent_image",
    "ensure_bundle_image",
    "ensure_image",
]


class DockerCLI:
    """The few engine calls the builder needs, through the docker CLI (argv only)."""

    def __init__(self, docker: str = "docker") -> None:
        found = shutil.which(docker)
        if found is None:
            raise ImageBuildError(
                "the docker command is not on PATH",
                hint="install the Docker CLI or start bot-bottle where it is available",
            )
        self.docker = found

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.docker, *args], capture_output=True, text=True, check=False)

    def image_id(self, ref: str) -> str | None:
        result = self._run("image", "inspect", "--format", "{{.Id}}", ref)
        return result.stdout.strip() if result.returncode == 0 else None

    def prune(self, repository: str, keep: int, min_age: float, log: TextIO) -> None:
        """Remove managed images of ``repository`` beyond the ``keep`` newest.

        Every change of a plugin set or of bot-bottle itself makes a new tag;
        without this, old bundles pile up (hundreds of MB each). Kept anyway:
        the ``keep`` newest (switching between two plugin sets must not
        rebuild each time), any younger than ``min_age`` seconds (another
        bot-bottle on the same engine may have just built it and be about to
        start it), and any a container uses (``docker rmi`` without force
        refuses those).
        """
        listing = self._run(
            "image", "ls", "--filter", f"label={MANAGED_LABEL}=true",
            "--format", "{{.CreatedAt}}\t{{.Repository}}:{{.Tag}}", repository,
        )  # fmt: skip
        if listing.returncode != 0:
            return
        rows = sorted((line.split("\t") for line in listing.stdout.splitlines() if "\t" in line),
                      reverse=True)  # fmt: skip
        now = datetime.now(UTC)
        for created, ref in rows[keep:]:
            try:
                when = datetime.strptime(" ".join(created.split()[:3]), "%Y-%m-%d %H:%M:%S %z")
            except ValueError:
                continue
            if (now - when).total_seconds() < min_age:
                continue
            result = self._run("image", "rm", ref)
            log.write(f"prune {ref}: {'removed' if result.returncode == 0 else 'kept (in use)'}\n")

    def prune_stages(self, log: TextIO, build_output: str = "") -> None:
        """Remove the untagged intermediate stage images our builds leave.

        The legacy builder keeps a multi-stage build's non-final stages as
        dangling images (hundreds of MB each, one set per build): on a machine
        that builds after every change they fill the disk. Only dangling
        images carrying our stage label are touched: those *this* build made
        (their ids are in ``build_output``, the builder's `` ---> <id>``
        lines), and any left older than :data:`PRUNE_MIN_AGE`. A young stage
        of another build is spared: a concurrent build on the same engine (two
        bottles started at once on a fresh machine) is still reading it, and
        pruning it failed that build with "No such image".
        """
        ours = set(_STAGE_ID_RE.findall(build_output))
        listing = self._run(
            "image", "ls", "--quiet", "--no-trunc", "--filter", "dangling=true",
            "--filter", f"label={STAGE_LABEL}=install",
        )  # fmt: skip
        for image_id in listing.stdout.split() if listing.returncode == 0 else ():
            if image_id.removeprefix("sha256:")[:12] in ours:
                result = self._run("image", "rm", image_id)
                log.write(f"prune build stage {image_id[:19]}: exit {result.returncode}\n")
        result = self._run(
            "image", "prune", "--force", "--filter", f"label={STAGE_LABEL}=install",
            "--filter", f"until={int(PRUNE_MIN_AGE)}s",
        )  # fmt: skip
        log.write(f"prune build stages: {result.stdout.strip() or result.stderr.strip()}\n")

    def root_dir(self) -> str | None:
        """Where the engine keeps images and layers (the disk a build fills)."""
        result = self._run("info", "--format", "{{.DockerRootDir}}")
        return result.stdout.strip() or None if result.returncode == 0 else None

    def machine(self) -> str:
        result = self._run("version", "--format", "{{.Server.Arch}}")
        arch = result.stdout.strip()
        if result.returncode != 0 or not arch:
            raise ImageBuildError(
                f"cannot reach the Docker engine: {result.stderr.strip()[:200]}",
                hint="start dockerd (or Docker Desktop) and retry; 'bot-bottle doctor' checks it",
            )
        return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)

    def build(
        self,
        context: Path,
        tag: str,
        spec: ImageSpec,
        labels: Mapping[str, str],
        log: TextIO,
        progress: Progress,
        *,
        no_cache: bool = False,
    ) -> int:
        argv = [
            self.docker,
            "build",
            "--force-rm",
            "--tag",
            tag,
            "--file",
            str(context / "Dockerfile"),
        ]
        if no_cache:
            argv.append("--no-cache")
        for key, value in {"BASE_IMAGE": spec.base_image, **spec.build_args}.items():
            argv += ["--build-arg", f"{key}={value}"]
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        argv.append(str(context))
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        with _BUILDS_LOCK:
            _BUILDS.add(proc)
        try:
            for line in proc.stdout:
                log.write(line)
                if _STEP_RE.match(line):
                    step = " ".join(line.split())
                    progress(step if len(step) <= 100 else step[:97] + "...")
        except BaseException:
            # Ctrl-C reaches the docker CLI through the terminal, SIGTERM to
            # the launcher does not: stop the CLI, which cancels the build in
            # the daemon, instead of leaving it running after we are gone.
            _stop(proc)
            raise
        finally:
            log.flush()
            with _BUILDS_LOCK:
                _BUILDS.discard(proc)
        return proc.wait()


#: The ``docker build`` CLIs running in this process. A launch checks its
#: images on worker threads, where SIGTERM's KeyboardInterrupt never lands:
#: the launch stops them through :func:`stop_running_builds`.
class EngineChecks(DockerCLI):
    """:class:`DockerCLI` whose look-ups (an image's id, the engine's
    machine) go through a Docker SDK client already open on the engine: a
    launch makes six, and each ``docker`` process cost 30-50 ms of CPU
    ahead of the bundle's start. Builds and pruning still run the CLI."""

    def __init__(self, client: Any, docker: str = "docker") -> None:
        super().__init__(docker)
        self._api = client.api

    def image_id(self, ref: str) -> str | None:
        import docker.errors

        try:
            return str(self._api.inspect_image(ref)["Id"])
        except docker.errors.DockerException:
            return None

    def machine(self) -> str:
        import docker.errors

        try:
            arch = str(self._api.version().get("Arch") or "")
        except docker.errors.DockerException as exc:
            raise ImageBuildError(
                f"cannot reach the Docker engine: {str(exc)[:200]}",
                hint="start dockerd (or Docker Desktop) and retry; 'bot-bottle doctor' checks it",
            ) from None
        if not arch:
            raise ImageBuildError(
                "the Docker engine did not say its architecture",
                hint="start dockerd (or Docker Desktop) and retry; 'bot-bottle doctor' checks it",
            )
        return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


_BUILDS: set[subprocess.Popen[str]] = set()
_BUILDS_LOCK = threading.Lock()


def stop_running_builds() -> None:
    """Stop every build this process runs (the launch was interrupted)."""
    with _BUILDS_LOCK:
        running = list(_BUILDS)
    for proc in running:
        _stop(proc)


def _stop(proc: subprocess.Popen[str], grace: float = 10.0) -> None:
    import signal

    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends; the CLI cancels
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _log_dir() -> Path:
    path = home_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_image(
    spec: ImageSpec,
    *,
    progress: Progress | None = None,
    force: bool = False,
    no_cache: bool = False,
    prune_min_age: float = PRUNE_MIN_AGE,
    docker: DockerCLI | None = None,
    log_dir: Path | None = None,
) -> ImageResult:
    """Return the tag of an image built from ``spec``, building it only when missing.

    ``force`` rebuilds even when the tag exists; ``no_cache`` also ignores the
    engine's layer cache (a cold build, for benchmarks and broken caches).
    """
    say = progress or (lambda _line: None)
    engine = docker or DockerCLI()
    base_id = engine.image_id(spec.base_image)
    if base_id is None:
        raise ImageBuildError(
            f"base image {spec.base_image} is not present in the Docker engine",
            hint="create it with scripts/base-image.sh, or pass another base image",
        )
    machine = engine.machine()
    if spec.target.machine != machine:
        spec = dataclasses.replace(spec, target=dataclasses.replace(spec.target, machine=machine))
    closure = dependency_closure(spec.distributions)
    digest = fingerprint(spec, base_id, closure)
    tag = f"{spec.repository}:{digest[:16]}"
    if not (force or no_cache) and engine.image_id(tag) is not None:
        say(f"using image {tag} (up to date)")
        return ImageResult(tag, built=False, log_path=None)

    log_path = (
        log_dir or _log_dir()
    ) / f"build-{spec.repository.replace('/', '-')}-{digest[:16]}.log"
    say(f"building image {tag} (log: {log_path})")
    with (
        log_path.open("w", encoding="utf-8") as log,
        tempfile.TemporaryDirectory(prefix="bot-bottle-build-") as tmp,
    ):
        context = Path(tmp)
        shutil.copyfile(spec.dockerfile, context / "Dockerfile")
        (context / CONTEXT_CA).write_bytes(check_ca(spec.extra_ca))
        make_wheelhouse(spec, closure, context / CONTEXT_WHEELHOUSE, log, log_path, say)
        labels = {FINGERPRINT_LABEL: digest, MANAGED_LABEL: "true"}
        code = engine.build(context, tag, spec, labels, log, say, no_cache=no_cache)
    if code != 0:
        output = log_path.read_text(encoding="utf-8", errors="replace")
        if "no space left on device" in output.lower():
            root = engine.root_dir()
            raise ImageBuildError(
                f"no space left on the Docker engine's disk while building {tag}"
                + (f" (its data root {root})" if root else ""),
                hint=f"free space there (see 'df -h {root or '/var/lib/docker'}' and 'docker "
                f"system df'), then run again; the full build output is in {log_path}",
            )
        tail = output.splitlines()[-5:]
        raise ImageBuildError(
            f"docker build of {tag} failed (exit {code}): " + " | ".join(tail)[-400:],
            hint=f"the full build output is in {log_path}",
        )
    output = log_path.read_text(encoding="utf-8", errors="replace")
    with log_path.open("a", encoding="utf-8") as log:
        engine.prune(spec.repository, KEEP_IMAGES, prune_min_age, log)
        engine.prune_stages(log, output)
    say(f"built image {tag}")
    return ImageResult(tag, built=True, log_path=log_path)


def ensure_agent_image(
    spec: ImageSpec,
    *,
    progress: Progress | None = None,
    force: bool = False,
    no_cache: bool = False,
    docker: DockerCLI | None = None,
) -> ImageResult:
    """Build (or reuse) a provider's agent image: the one path for it.

    ``spec`` comes from :func:`bot_bottle.provider_kit.agent_image_spec`
    (the plan's ``agent_image_spec``): content-tagged
    ``bot-bottle/agent-<provider>:<fingerprint>``, so an unchanged
    Dockerfile, base image, build args and CA bundle reuse it at once. The
    build context holds the Dockerfile and ``extra-ca.crt`` only, so a
    provider Dockerfile must be self-contained.
    """
    if not spec.dockerfile.is_file():
        provider = spec.repository.rpartition("/agent-")[2] or spec.repository
        raise ImageBuildError(
            f"the Dockerfile of agent provider {provider!r} does not exist: {spec.dockerfile}",
            hint="fix the path in the bottle's agent_provider.dockerfile, or drop it to use "
            "the provider's own",
        )
    return ensure_image(spec, progress=progress, force=force, no_cache=no_cache, docker=docker)


def ensure_bundle_image(
    *,
    base_image: str | None = None,
    extra_ca: Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
    no_cache: bool = False,
    docker: DockerCLI | None = None,
) -> ImageResult:
    """The sidecar bundle image (``bot_bottle_sidecars.bundle`` says what goes in)."""
    from bot_bottle_sidecars.bundle import bundle_spec

    spec = bundle_spec(base_image=base_image, extra_ca=extra_ca)
    return ensure_image(spec, progress=progress, force=force, no_cache=no_cache, docker=docker)


def image_user(ref: str, docker: DockerCLI | None = None) -> str:
    """The ``USER`` image ``ref`` runs as ("" for root or when unknown)."""
    engine = docker or DockerCLI()
    result = engine._run("image", "inspect", "--format", "{{.Config.User}}", ref)
    return result.stdout.strip() if result.returncode == 0 else ""
