"""What an image build needs, as data: the engine-neutral half of image building.

An image that runs bot-bottle code (the sidecar bundle) must carry exactly
the versions the host runs -- core, sidecars, every DLP detector plugin,
third-party ones included -- so host and sidecar never drift. No registry
can be assumed, so images are built locally:

1. A *fingerprint* is computed from cheap inputs: the Dockerfile, the base
   image's id, each distribution's name, version and content (source tree of
   an editable install, RECORD of a regular one), the pinned versions of
   their dependencies, the target Python/platform and the extra CA bundle.
   The tag is derived from it, so an unchanged set reuses the image at once
   and a changed plugin set rebuilds.
2. On a miss, a *wheelhouse* is made on the host: wheels of our distributions
   (built from source when editable, repacked from the installed files
   otherwise) plus ``pip download`` of their dependencies for the image's
   Python and platform, constrained to the host's installed versions. The
   image installs from it with ``--no-index``: the build needs no index.
3. A backend's builder (the Docker backend's ``bot_bottle_docker.images``)
   runs the engine's build on that context, with its output in a log file
   whose path every error names.

Nothing here talks to an engine: a backend that builds images some other way
(a microVM's root filesystem) reuses the fingerprint and the wheelhouse.

The extra CA bundle (``BOT_BOTTLE_BUILD_CA_BUNDLE`` or ``extra_ca``) is
copied into the build context so image builds work behind TLS-inspecting
proxies; the host's ``pip`` uses it too.
"""

from __future__ import annotations

import base64
import csv
import email.message
import email.parser
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit

from bot_bottle.errors import BotBottleError

ENV_CA_BUNDLE = "BOT_BOTTLE_BUILD_CA_BUNDLE"
#: The local base image every bottle image builds FROM (agent, bundle), and
#: the variable that names another one.
BASE_IMAGE = "bot-bottle/base:trixie"
ENV_BASE_IMAGE = "BOT_BOTTLE_BASE_IMAGE"
FINGERPRINT_LABEL = "org.bot-bottle.fingerprint"
MANAGED_LABEL = "org.bot-bottle.managed"
#: Names in the build context the Dockerfiles rely on.
CONTEXT_WHEELHOUSE = "wheelhouse"
CONTEXT_REQUIREMENTS = "requirements.txt"
CONTEXT_CA = "extra-ca.crt"

Progress = Callable[[str], None]
_NAME_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
# Parts of a source tree that never reach a wheel: editing them must not rebuild.
_SKIP_PARTS = {
    "__pycache__",
    ".git",
    ".venv",
    "build",
    "dist",
    "tests",
    ".pytest_cache",
    ".ruff_cache",
}


_INSTALLER_FILES = {
    "RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json", "uv_build.json"
}  # fmt: skip


#: Set on the intermediate ``install`` stage of our multi-stage Dockerfiles.
STAGE_LABEL = "org.bot-bottle.stage"


class ImageBuildError(BotBottleError):
    """An image could not be built; the message names the build log."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Target:
    """The Python and platform the image's interpreter is."""

    python_version: str = "3.13"
    #: Machine name as wheels spell it (x86_64, aarch64).
    machine: str = "x86_64"
    glibc: tuple[int, int] = (2, 41)

    def pip_args(self) -> list[str]:
        major, minor = self.python_version.split(".")
        abi = f"cp{major}{minor}"
        platforms = [
            f"manylinux_{self.glibc[0]}_{m}_{self.machine}" for m in range(self.glibc[1], 16, -1)
        ]
        # No plain linux_* tag: such wheels are built against one machine's libc.
        platforms.append(f"manylinux2014_{self.machine}")
        args = ["--only-binary=:all:", "--python-version", self.python_version]
        args += ["--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none"]
        for platform in platforms:
            args += ["--platform", platform]
        return args


@dataclass(frozen=True)
class InstalledDist:
    name: str
    version: str
    #: Source directory of an editable install: the host runs that source, so
    #: the image gets a wheel built from it. Every other install is repacked
    #: from its installed files, which are what the host runs.
    source: Path | None
    dist: metadata.Distribution = field(repr=False, compare=False)
    #: ``Requires-Dist`` as read by :meth:`find` (None: ask ``dist``).
    requires: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def find(cls, name: str) -> InstalledDist:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ImageBuildError(
                f"distribution {name!r} is not installed on this host",
                hint=f"install it (e.g. 'uv pip install {name}') or remove the plugin from the set",
            ) from None
        source = None
        direct = dist.read_text("direct_url.json")
        if direct:
            info = json.loads(direct)
            url = urlsplit(str(info.get("url", "")))
            if (info.get("dir_info") or {}).get("editable") and url.scheme == "file":
                source = Path(unquote(url.path))
        head = _metadata_headers(dist)
        if head is None:
            return cls(dist.metadata["Name"], dist.version, source, dist)
        requires = tuple(head.get_all("Requires-Dist") or ())
        return cls(head["Name"], head["Version"], source, dist, requires)

    def requirement_names(self) -> list[str]:
        names = []
        requires = self.requires if self.requires is not None else self.dist.requires
        for req in requires or []:
            # Extras are not installed in the image; everything else may be.
            if "extra ==" in req.replace("extra==", "extra =="):
                continue
            match = _NAME_RE.match(req.strip())
            if match:
                names.append(match.group(1))
        return names

    def content_digest(self) -> str:
        digest = hashlib.sha256()
        if self.source is not None:
            for path in sorted(_source_files(self.source)):
                digest.update(str(path.relative_to(self.source)).encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            # The installed files' hashes, minus what the installer wrote about
            # this particular install (where from, by whom): reinstalling the
            # same wheel from another path must not rebuild the image.
            rows = csv.reader(io.StringIO(self.dist.read_text("RECORD") or ""))
            kept = sorted(
                ",".join(row) for row in rows if row and Path(row[0]).name not in _INSTALLER_FILES
            )
            digest.update("\n".join(kept).encode())
        return digest.hexdigest()


def _metadata_headers(dist: metadata.Distribution) -> email.message.Message | None:
    """The headers of ``dist``'s core metadata, parsed without its body.
    ``dist.metadata`` parses the whole file (the long description too) on
    every access: name, version and requirements cost three parses, and a
    launch's two closures (~80 distributions) spent ~0.3 s of CPU in them
    before the bundle could start. None when the file is missing or lacks a
    name or version (then ``dist`` answers)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if not text:
        return None
    head = email.parser.HeaderParser().parsestr(re.split(r"\r?\n\r?\n", text, maxsplit=1)[0])
    return head if head["Name"] and head["Version"] else None


def _source_files(root: Path) -> Iterable[Path]:
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if any(part in _SKIP_PARTS or part.endswith(".egg-info") for part in rel):
            continue
        # Compiled files are outputs of the build (an editable install puts
        # a C extension next to its source), not inputs of the wheel.
        if path.is_file() and path.suffix not in (".pyc", ".pyo", ".so", ".pyd"):
            yield path


def dependency_closure(roots: Iterable[str]) -> dict[str, InstalledDist]:
    """Our distributions and every installed distribution they need, by name."""
    roots = list(roots)
    # Our own distributions must be installed; say so before anything else.
    seen = {normalize(name): InstalledDist.find(name) for name in roots}
    todo = [r for d in seen.values() for r in d.requirement_names()]
    while todo:
        name = normalize(todo.pop())
        if name in seen:
            continue
        try:
            dist = InstalledDist.find(name)
        except ImageBuildError:
            # Platform-specific requirements need not be installed on this host;
            # pip resolves them for the target.
            continue
        seen[name] = dist
        todo.extend(dist.requirement_names())
    return seen


@dataclass(frozen=True)
class ImageSpec:
    """What to build: a Dockerfile plus the distributions to install in it."""

    repository: str
    dockerfile: Path
    distributions: tuple[str, ...]
    base_image: str
    target: Target = field(default_factory=Target)
    extra_ca: Path | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageResult:
    tag: str
    built: bool
    log_path: Path | None


def base_image_name(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(ENV_BASE_IMAGE) or BASE_IMAGE


def extra_ca_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    value = env.get(ENV_CA_BUNDLE)
    return Path(value) if value else None


def check_ca(path: Path | None) -> bytes:
    if path is None:
        return b""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageBuildError(
            f"cannot read the CA bundle {path}: {exc.strerror}",
            hint=f"pass a readable PEM file (or unset {ENV_CA_BUNDLE})",
        ) from exc
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ImageBuildError(
            f"{path} holds no PEM certificate",
            hint="pass the PEM bundle your proxy's CA is in "
            "(e.g. /etc/ssl/certs/ca-certificates.crt)",
        )
    return data


def fingerprint(spec: ImageSpec, base_id: str, closure: Mapping[str, InstalledDist]) -> str:
    digest = hashlib.sha256()

    def add(label: str, value: str | bytes) -> None:
        data = value.encode() if isinstance(value, str) else value
        digest.update(label.encode() + b"\0" + hashlib.sha256(data).digest())

    add("dockerfile", spec.dockerfile.read_bytes())
    add("base", base_id)
    add("target", repr(spec.target))
    add("ca", check_ca(spec.extra_ca))
    add("args", json.dumps(dict(spec.build_args), sort_keys=True))
    ours = {normalize(d) for d in spec.distributions}
    for name in sorted(closure):
        dist = closure[name]
        add("dist", f"{name}=={dist.version}")
        if name in ours:
            add("content", dist.content_digest())
    return digest.hexdigest()


def _system_ca() -> bytes:
    import ssl

    cafile = ssl.get_default_verify_paths().cafile
    if cafile:
        try:
            return Path(cafile).read_bytes()
        except OSError:
            pass
    try:
        import certifi  # pyright: ignore[reportMissingModuleSource]

        return Path(certifi.where()).read_bytes()
    except (ImportError, OSError):
        return b""


def _pip_command() -> list[str]:
    # The host's own pip when it has one; otherwise uv runs pip for us.
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, check=False
    )
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    uv = _uv()
    if uv is not None:
        # pip evaluates environment markers with the Python it runs on, not
        # --python-version: under uv's default interpreter (another version)
        # a marker like mitmproxy's 'typing-extensions<=4.14; python_version <
        # "3.13"' applied where it must not, and the host's own versions (the
        # constraints) became unsatisfiable. The host's interpreter agrees
        # with the constraints it installed.
        return [uv, "tool", "run", "--python", sys.executable, "--from", "pip", "pip"]
    raise ImageBuildError(
        "neither pip nor uv is available to fetch the image's dependencies",
        hint="install pip into bot-bottle's environment, or install uv",
    )


def _uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv")


def _run_logged(argv: list[str], log: TextIO, what: str, log_path: Path, **kw: object) -> None:
    log.write("$ " + " ".join(argv) + "\n")
    log.flush()
    result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False, **kw)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise ImageBuildError(
            f"{what} failed (exit {result.returncode})", hint=f"see the build log: {log_path}"
        )


#: Entry-point group in which a distribution names its compiled modules that
#: are optional (it works without them, only slower): such a distribution
#: can be repacked pure for an image whose Python or platform its installed
#: wheel does not fit (bot-bottle-dlp's C run finder).
OPTIONAL_EXTENSIONS = "bot_bottle.optional_extensions"
_COMPILED = (".so", ".pyd")


def _image_tag(wheel_meta: str, target: Target) -> str | None:
    """The first of an installed wheel's tags the image's Python installs
    (what :meth:`Target.pip_args` lets pip take), or None."""
    major, minor = target.python_version.split(".")
    python = f"cp{major}{minor}"
    platforms = {
        f"manylinux_{target.glibc[0]}_{m}_{target.machine}" for m in range(target.glibc[1], 16, -1)
    } | {f"manylinux2014_{target.machine}"}
    for line in wheel_meta.splitlines():
        if not line.startswith("Tag:"):
            continue
        tag = line.split(":", 1)[1].strip()
        py, abi, plat = [*tag.split("-"), "", "", ""][:3]
        if py in (python, "py3") and abi in (python, "abi3", "none") and plat in platforms:
            return tag
    return None


def _optional_extensions(dist: InstalledDist) -> set[str]:
    return {ep.value for ep in dist.dist.entry_points if ep.group == OPTIONAL_EXTENSIONS}


def _module_of(rel: str) -> str:
    """``pkg/mod.cpython-313-x86_64-linux-gnu.so`` -> ``pkg.mod``."""
    path = Path(rel)
    return ".".join([*path.parent.parts, path.name.split(".")[0]])


def repack_installed(dist: InstalledDist, dest: Path, target: Target | None = None) -> Path:
    """A wheel made from an installed (non-editable) distribution's files.

    Third-party plugins may come from an index the image cannot reach, or
    from a local path that no longer exists; the installed files are what the
    host runs, so they are what the image gets. A distribution with compiled
    files is repacked with its installed wheel's tag when that tag fits the
    image (``target``); otherwise only if every compiled module is one it
    declares optional (:data:`OPTIONAL_EXTENSIONS`), which are then left out.
    """
    target = target or Target()
    wheel_meta = dist.dist.read_text("WHEEL") or ""
    tag = "py3-none-any"
    drop: set[str] = set()
    pure = False  # a platform wheel repacked as a pure one
    if "Root-Is-Purelib: true" not in wheel_meta:
        fits = _image_tag(wheel_meta, target)
        compiled = {str(f) for f in dist.dist.files or [] if str(f).endswith(_COMPILED)}
        if fits is not None:
            tag = fits
        elif {_module_of(f) for f in compiled} <= _optional_extensions(dist):
            # (none at all: built where the compiler was missing)
            drop, pure = compiled, True
        else:
            raise ImageBuildError(
                f"{dist.name} {dist.version} is not a pure-Python distribution and its "
                f"installed wheel does not fit the image (Python {target.python_version}, "
                f"{target.machine}, glibc {target.glibc[0]}.{target.glibc[1]})",
                hint=f"publish a wheel of {dist.name} for Linux, or install it from source",
            )
    files = [f for f in dist.dist.files or [] if not str(f).startswith("..") and str(f) not in drop]
    metadata_file = next((f for f in files if str(f).endswith(".dist-info/METADATA")), None)
    if metadata_file is None:
        raise ImageBuildError(
            f"{dist.name} {dist.version} lists no installed files (RECORD is missing)",
            hint=f"reinstall {dist.name} with pip or uv",
        )
    dist_info = Path(str(metadata_file)).parts[0]
    norm = re.sub(r"[-_.]+", "_", dist.name).lower()
    wheel = dest / f"{norm}-{dist.version}-{tag}.whl"
    record_rows = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            parts = Path(str(rel)).parts
            if "__pycache__" in parts or str(rel).endswith((".pyc", "RECORD", "INSTALLER")):
                continue
            if parts[0].endswith(".dist-info") and parts[0] != dist_info:
                continue
            if str(rel).endswith("direct_url.json"):
                continue
            data = Path(str(dist.dist.locate_file(rel))).read_bytes()
            if pure and str(rel).endswith(".dist-info/WHEEL"):
                # Now pure: the image's pip must see a pure wheel.
                data = _pure_wheel_meta(data.decode()).encode()
            zf.writestr(str(rel), data)
            sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record_rows.append((str(rel), f"sha256={sha}", str(len(data))))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([*record_rows, (f"{dist_info}/RECORD", "", "")])
        zf.writestr(f"{dist_info}/RECORD", out.getvalue())
    return wheel


def _pure_wheel_meta(meta: str) -> str:
    lines = [ln for ln in meta.splitlines() if not ln.startswith(("Tag:", "Root-Is-Purelib:"))]
    return "\n".join([*lines, "Root-Is-Purelib: true", "Tag: py3-none-any", ""])


def fit_built_wheel(wheel: Path, target: Target) -> Path:
    """The wheel just built from a source checkout, made installable by the image.

    A source build compiles for the host: its Python, its platform (a
    macOS host builds ``macosx_*``), its glibc (a host newer than the
    image's builds a ``manylinux`` tag the image refuses). A wheel whose tag
    the image's Python takes is kept as it is; one whose compiled modules
    are all declared optional (:data:`OPTIONAL_EXTENSIONS`) is rewritten
    pure without them (it works, only slower); any other is refused here,
    in words, rather than by pip inside the image build.
    """
    name, version, python, abi, plat = wheel.name[: -len(".whl")].split("-")[-5:]
    tag = f"{python}-{abi}-{plat}"
    if plat == "any" or _image_tag(f"Tag: {tag}\n", target) is not None:
        return wheel
    with zipfile.ZipFile(wheel) as zf:
        members = zf.namelist()
        dist_info = next(
            (n.split("/", 1)[0] for n in members if n.endswith(".dist-info/WHEEL")), None
        )
        optional: set[str] = set()
        if dist_info is not None and f"{dist_info}/entry_points.txt" in members:
            eps = zf.read(f"{dist_info}/entry_points.txt").decode()
            optional = {v for g, _n, v in _entry_point_rows(eps) if g == OPTIONAL_EXTENSIONS}
        compiled = {n for n in members if n.endswith(_COMPILED)}
        if dist_info is None or not {_module_of(n) for n in compiled} <= optional:
            raise ImageBuildError(
                f"the wheel built from source, {wheel.name}, does not fit the image "
                f"(Python {target.python_version}, {target.machine}, glibc "
                f"{target.glibc[0]}.{target.glibc[1]}) and its compiled modules are not optional",
                hint="install that plugin from a wheel built for Linux, or build it in a "
                "container of the image's distribution",
            )
        pure = wheel.with_name(f"{name}-{version}-py3-none-any.whl")
        rows = []
        with zipfile.ZipFile(pure, "w", zipfile.ZIP_DEFLATED) as out:
            for member in members:
                if member in compiled or member == f"{dist_info}/RECORD":
                    continue
                data = zf.read(member)
                if member == f"{dist_info}/WHEEL":
                    data = _pure_wheel_meta(data.decode()).encode()
                out.writestr(member, data)
                sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                rows.append((member, f"sha256={sha.decode()}", str(len(data))))
            record = io.StringIO()
            csv.writer(record, lineterminator="\n").writerows(
                [*rows, (f"{dist_info}/RECORD", "", "")]
            )
            out.writestr(f"{dist_info}/RECORD", record.getvalue())
    wheel.unlink()
    return pure


def _entry_point_rows(text: str) -> Iterable[tuple[str, str, str]]:
    """``(group, name, value)`` of an ``entry_points.txt``."""
    group = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif "=" in line and group:
            key, value = line.split("=", 1)
            yield group, key.strip(), value.strip()


def make_wheelhouse(
    spec: ImageSpec,
    closure: Mapping[str, InstalledDist],
    dest: Path,
    log: TextIO,
    log_path: Path,
    progress: Progress,
) -> list[str]:
    """Fill ``dest`` with every wheel the image needs; return the top-level pins."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = []
    for name in spec.distributions:
        dist = closure.get(normalize(name)) or InstalledDist.find(name)
        pins.append(f"{dist.name}=={dist.version}")
        if dist.source is not None:
            progress(f"building wheel {dist.name} {dist.version} from {dist.source}")
            uv = _uv()
            argv = (
                # --python: never let uv go looking for (or download) another interpreter.
                [
                    uv,
                    "build",
                    "--python",
                    sys.executable,
                    "--wheel",
                    "--out-dir",
                    str(dest),
                    str(dist.source),
                ]
                if uv
                else [*_pip_command(), "wheel", "--no-deps", "-w", str(dest), str(dist.source)]
            )
            before = set(dest.glob("*.whl"))
            _run_logged(argv, log, f"building the wheel of {dist.name}", log_path)
            for built in sorted(set(dest.glob("*.whl")) - before):
                fit_built_wheel(built, spec.target)
        else:
            progress(f"repacking installed {dist.name} {dist.version}")
            repack_installed(dist, dest, spec.target)
    ours = {normalize(n) for n in spec.distributions}
    constraints = dest.parent / "constraints.txt"
    constraints.write_text(
        "".join(f"{d.name}=={d.version}\n" for n, d in sorted(closure.items()) if n not in ours)
    )
    requirements = dest.parent / CONTEXT_REQUIREMENTS
    requirements.write_text("".join(p + "\n" for p in pins))
    if not pins:
        constraints.unlink()
        return pins
    progress(f"downloading {len(closure) - len(ours)} dependencies for the image's Python")
    env = dict(os.environ)
    if spec.extra_ca is not None:
        # pip's cert option replaces its trust store: give it the system
        # store plus the extra CA, not the extra CA alone.
        combined = dest.parent / "pip-ca.pem"
        combined.write_bytes(_system_ca() + b"\n" + check_ca(spec.extra_ca))
        env["PIP_CERT"] = str(combined)
    _run_logged(
        [
            *_pip_command(),
            "download",
            "--dest",
            str(dest),
            "--find-links",
            str(dest),
            "-r",
            str(requirements),
            "-c",
            str(constraints),
            *spec.target.pip_args(),
        ],
        log,
        "downloading the image's dependencies",
        log_path,
        env=env,
    )
    # Keep the build context to what the Dockerfile uses.
    constraints.unlink()
    (dest.parent / "pip-ca.pem").unlink(missing_ok=True)
    return pins
