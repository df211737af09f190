"""The sidecar bundle image, built for real and run on an internal Docker network.

The image is content-tagged and kept between runs (that reuse is the point of
the tag); containers and networks are labelled and removed by the fixtures.
Until the egress and git-gate daemons land, the plan runs stand-ins made of
the same programs the image ships for them: ``mitmdump`` and ``git daemon``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot_bottle.contracts.supervise import Decision, SuperviseQueue
from bot_bottle.imagebuild import ImageResult
from bot_bottle_docker.images import ensure_bundle_image

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

LABEL = {"org.bot-bottle.test": "bundle-image"}
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SLUG = "itest"
SECRET = "tok-bundle-secret-42"


#: Where PyPI has no hyperscan wheel the image scans without it.
_HYPERSCAN_WHEEL = pytest.mark.skipif(
    platform.machine() != "x86_64",
    reason="hyperscan ships wheels for x86_64 only; the image scans without it",
)


def _python_in(
    docker_client: docker.DockerClient, tag: str, script: str, *, user: str | None = None
) -> bytes:
    """``script``'s output, run by the image's own interpreter in a throwaway
    container with no network."""
    return docker_client.containers.run(
        tag,
        ["-c", script],
        entrypoint="/opt/bot-bottle/bin/python",
        user=user,
        remove=True,
        network_disabled=True,
        labels=LABEL,
    )


@pytest.fixture(scope="session")
def bundle_image(
    docker_client: docker.DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> ImageResult:
    # The machine's CA bundle goes into the build, as it would behind a
    # TLS-inspecting proxy.
    return ensure_bundle_image(
        base_image=base_image, extra_ca=HOST_CA if HOST_CA.exists() else None
    )


def test_an_unchanged_bundle_is_reused(bundle_image: ImageResult, base_image: str) -> None:
    again = ensure_bundle_image(
        base_image=base_image, extra_ca=HOST_CA if HOST_CA.exists() else None
    )
    assert again.tag == bundle_image.tag
    assert again.built is False


def test_the_image_carries_the_hosts_versions(
    docker_client: docker.DockerClient, bundle_image: ImageResult
) -> None:
    from importlib.metadata import version

    script = (
        "import json, importlib.metadata as m;"
        "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    )
    out = _python_in(docker_client, bundle_image.tag, script)
    inside = json.loads(out)
    for name in ("bot-bottle", "bot-bottle-sidecars", "mitmproxy", "mcp", "pydantic"):
        assert inside[name] == version(name), name


@_HYPERSCAN_WHEEL
def test_the_images_dlp_scan_has_the_hyperscan_prefilter(
    docker_client: docker.DockerClient, bundle_image: ImageResult
) -> None:
    # Egress scans in the bundle: it must get the fast path where PyPI has
    # a wheel (x86_64), and the prefilter must really answer there.
    script = (
        "from bot_bottle.dlp import prefilter, views;"
        "assert prefilter.available(); prefilter.lazy = False;"
        "print(sorted(views._GATE.matching(b'%41.' + b'Q' * 30)))"
    )
    out = _python_in(docker_client, bundle_image.tag, script)
    assert out.decode().strip() == "[0, 3]"


@_HYPERSCAN_WHEEL
def test_the_images_dlp_databases_are_loaded_not_compiled(
    docker_client: docker.DockerClient, bundle_image: ImageResult
) -> None:
    # The build compiled the rule sets into the interpreter's prefix; a
    # bottle's egress (as its own user) loads them: compiling is refused here.
    script = (
        "from bot_bottle.dlp import prefilter, views;"
        "from bot_bottle_dlp.token_patterns import TokenPatternsDetector;"
        "assert prefilter.cache_dir == '/opt/bot-bottle/hscache', prefilter.cache_dir;"
        "prefilter._compile = lambda *a: (_ for _ in ()).throw(AssertionError('compiled'));"
        "d = TokenPatternsDetector(); c = d._prefilter._compiled();"
        "assert c.db is not None; views._GATE._compiled();"
        "print(sorted(d._prefilter.matching(b'x ghp_' + b'a' * 36) or ()) != [])"
    )
    out = _python_in(docker_client, bundle_image.tag, script, user="60101")  # bb-egress
    assert out.decode().strip() == "True"


def test_the_images_dlp_views_find_their_runs_natively(
    docker_client: docker.DockerClient, bundle_image: ImageResult
) -> None:
    # The wheelhouse's bot-bottle-dlp is built on the host with its C run
    # finder; egress (as its own user) picks it up the way the daemon does.
    script = (
        "from bot_bottle.plugins import PluginHost;"
        "from bot_bottle.dlp import views;"
        "from bot_bottle.dlp.pipeline import use_accelerator;"
        "from bot_bottle_dlp import _runs;"
        "f = use_accelerator(PluginHost().load());"
        "assert _runs.__file__.endswith('.so'), _runs.__file__;"
        "assert views.run_finder() == f.find;"
        "text = views.decode_runs(b'x aGVsbG8gd29ybGQsIHRoaXMgaXMgdGV4dA==')[0][3];"
        "print(f.name, f.is_available().detail, text)"
    )
    out = _python_in(docker_client, bundle_image.tag, script, user="60101")  # bb-egress
    assert out.decode().strip() == (
        "native_runs in use: the DLP views find their runs in C b'hello world, this is text'"
    )


def test_the_image_has_the_daemon_users_the_host_expects(
    docker_client: docker.DockerClient, bundle_image: ImageResult
) -> None:
    from bot_bottle_sidecars.layout import DAEMON_USERS, SECRETS_IN

    out = docker_client.containers.run(
        bundle_image.tag,
        ["-c", f"getent passwd {' '.join(u.name for u in DAEMON_USERS.values())}; "
               f"stat -c '%u %a' {SECRETS_IN}"],
        entrypoint="sh", remove=True, network_disabled=True, labels=LABEL,
    ).decode()  # fmt: skip
    lines = out.splitlines()
    passwd = {f[0]: (int(f[2]), int(f[3])) for f in (line.split(":") for line in lines[:-1])}
    assert passwd == {u.name: (u.uid, u.uid) for u in DAEMON_USERS.values()}
    # Only root (init) can enter the directory the host's secrets are mounted under.
    assert lines[-1] == "0 700"


@pytest.mark.skipif(not HOST_CA.exists(), reason="no CA bundle on this machine to pass in")
def test_the_extra_ca_bundle_is_added_to_the_images_trust_store(
    docker_client: docker.DockerClient, bundle_image: ImageResult, base_image: str
) -> None:
    # A line of the bundle's first certificate: the image's store must hold
    # it once more than the base image's store does.
    marker = HOST_CA.read_text().split("-----END CERTIFICATE-----")[0].splitlines()[-1]

    def count(image: str) -> int:
        out = docker_client.containers.run(
            image, ["-c", "cat /etc/ssl/certs/ca-certificates.crt"], entrypoint="sh",
            remove=True, network_disabled=True, labels=LABEL,
        )  # fmt: skip
        return out.decode().count(marker)

    assert count(bundle_image.tag) == count(base_image) + 1


CLIENT = textwrap.dedent(
    """
    import json, subprocess, sys, time, urllib.request
    import anyio
    from mcp import Client

    URL = "http://sidecar:8765/mcp"

    def retry(fn, what):
        deadline = time.monotonic() + 60
        while True:
            try:
                return fn()
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{what}: {exc!r}")
                time.sleep(0.5)

    async def mcp_probe():
        async with Client(URL) as c:
            tools = sorted(t.name for t in (await c.list_tools()).tools)
            block = await c.call_tool(
                "capability-block",
                {"dockerfile": "RUN apt-get install -y jq", "justification": "need jq"},
            )
            return {"tools": tools, "proposal": block.structured_content}

    async def mcp_poll(pid):
        async with Client(URL) as c:
            r = await c.call_tool("capability-status", {"proposal_id": pid})
            return r.structured_content

    def git():
        return subprocess.run(
            ["git", "ls-remote", "git://sidecar/repo.git"],
            capture_output=True, text=True, check=True, timeout=20,
        ).stdout

    def via_proxy():
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": "http://sidecar:8080"})
        )
        with opener.open("http://sidecar:8765/healthz", timeout=10) as resp:
            return resp.read().decode()

    if sys.argv[1] == "probe":
        out = retry(lambda: anyio.run(mcp_probe), "supervise")
        out["git"] = retry(git, "git-gate")
        out["egress"] = retry(via_proxy, "egress")
    else:
        out = anyio.run(mcp_poll, sys.argv[2])
    print(json.dumps(out))
    """
)


def _plan() -> dict[str, Any]:
    return {
        "grace_seconds": 5,
        "control_socket": "/run/bot-bottle/init.sock",
        "daemons": [
            {
                # Stand-in for the egress daemon: the real mitmproxy of the image.
                "name": "egress",
                "argv": [
                    "mitmdump",
                    "--listen-host",
                    "0.0.0.0",  # noqa: S104 -- inside the bundle, on the test network
                    "--listen-port",
                    "8080",
                    "--set",
                    "confdir=/tmp/mitmproxy",
                    "--quiet",
                ],
                "env": ["EGRESS_TOKEN_*"],
                "forward_sighup": True,
            },
            {
                # Stand-in for git-gate: the git daemon it is built on.
                "name": "git-gate",
                "argv": [
                    "git",
                    "daemon",
                    "--export-all",
                    "--reuseaddr",
                    "--listen=0.0.0.0",
                    "--port=9418",
                    "--base-path=/srv/git",
                    "/srv/git",
                ],
            },
            {
                "name": "supervise",
                "argv": [
                    "python",
                    "-m",
                    "bot_bottle_sidecars.supervise",
                    "--queue-dir",
                    "/var/lib/bot-bottle/queue",
                    "--bottle-slug",
                    SLUG,
                    "--port",
                    "8765",
                ],
            },
        ],
    }


def _make_repo(root: Path) -> str:
    work, bare = root / "work", root / "git" / "repo.git"
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.test",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.test",
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    (work / "README").write_text("hello\n")
    subprocess.run(["git", "-C", str(work), "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "init"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, env=env)
    return subprocess.run(
        ["git", "-C", str(bare), "rev-parse", "main"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def network(docker_client: docker.DockerClient, unique: str) -> Iterator[Any]:
    """An internal network; every container labelled with its run id goes with it."""
    labels = {**LABEL, "org.bot-bottle.test-run": unique}
    net = docker_client.networks.create(f"bb-test-bundle-{unique}", internal=True, labels=labels)
    try:
        yield net
    finally:
        run_filter: dict[str, Any] = {"label": f"org.bot-bottle.test-run={unique}"}
        for container in docker_client.containers.list(all=True, filters=run_filter):
            container.remove(force=True)
        net.remove()


def _run_client(
    docker_client: docker.DockerClient, image: str, network: Any, tdir: Path, *args: str
) -> dict[str, Any]:
    container = docker_client.containers.run(
        image,
        ["/t/client.py", *args],
        entrypoint="/opt/bot-bottle/bin/python",
        network=network.name,
        volumes={str(tdir): {"bind": "/t", "mode": "ro"}},
        labels={**LABEL, "org.bot-bottle.test-run": network.name.rsplit("-", 1)[-1]},
        detach=True,
    )
    try:
        status = container.wait(timeout=120)["StatusCode"]
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert status == 0, logs
    return json.loads(logs.strip().splitlines()[-1])


def test_bundle_serves_egress_git_gate_and_supervise_on_an_internal_network(
    docker_client: docker.DockerClient,
    bundle_image: ImageResult,
    network: Any,
    tmp_path: Path,
    unique: str,
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/init-plan.json").write_text(json.dumps(_plan()))
    (tmp_path / "queue").mkdir()
    (tmp_path / "t").mkdir()
    (tmp_path / "t/client.py").write_text(CLIENT)
    head = _make_repo(tmp_path)

    from docker.types import EndpointConfig

    # The agent side reaches the bundle by a fixed name on the bottle network.
    bundle = docker_client.containers.create(
        bundle_image.tag,
        name=f"bb-test-bundle-{unique}",
        environment={"EGRESS_TOKEN_1": SECRET},
        volumes={
            str(tmp_path / "etc"): {"bind": "/etc/bot-bottle", "mode": "ro"},
            str(tmp_path / "queue"): {"bind": "/var/lib/bot-bottle/queue", "mode": "rw"},
            str(tmp_path / "git"): {"bind": "/srv/git", "mode": "ro"},
        },
        labels={**LABEL, "org.bot-bottle.test-run": unique},
        network=network.name,
        networking_config={
            network.name: EndpointConfig(version=docker_client.api.api_version, aliases=["sidecar"])
        },
    )
    bundle.start()

    probe = _run_client(docker_client, bundle_image.tag, network, tmp_path / "t", "probe")
    assert probe["tools"] == [
        "capability-block",
        "capability-status",
        "egress-request",
        "list-egress-routes",
    ]
    assert probe["git"].split()[0] == head
    assert probe["egress"].strip() == "ok"
    pid = probe["proposal"]["proposal_id"]
    assert probe["proposal"]["status"] == "pending"

    # The operator answers on the host through the bind-mounted queue directory.
    queue = SuperviseQueue(tmp_path / "queue", SLUG)
    assert queue.load_proposal(pid).payload.justification == "need jq"
    queue.respond(pid, Decision.REJECTED, comment="use python's json module")
    polled = _run_client(docker_client, bundle_image.tag, network, tmp_path / "t", "poll", pid)
    assert polled["status"] == "rejected"
    assert polled["comment"] == "use python's json module"

    # Env scoping inside the real bundle: only egress holds the token slot.
    status = _exec_json(bundle, ["python", "-m", "bot_bottle_sidecars.init", "ctl", "status"])
    pids = {d["name"]: d["pid"] for d in status["daemons"]}
    assert all(pids.values()), status
    for name, daemon_pid in pids.items():
        output: bytes = bundle.exec_run(["cat", f"/proc/{daemon_pid}/environ"]).output  # type: ignore[assignment]
        environ = output.decode()
        assert (SECRET in environ) == (name == "egress"), name

    # docker stop = SIGTERM to init: every daemon stops within the grace period.
    started = time.monotonic()
    bundle.stop(timeout=20)
    assert time.monotonic() - started < 20
    assert bundle.wait(timeout=5)["StatusCode"] == 0
    logs = bundle.logs().decode()
    assert '"event": "init_exiting"' in logs
    assert "daemon_killed" not in logs
    assert SECRET not in logs


def _exec_json(container: Any, argv: list[str]) -> dict[str, Any]:
    result: Any = container.exec_run(argv)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_missing_base_image_is_a_clear_error(
    docker_client: docker.DockerClient, tmp_path: Path, unique: str
) -> None:
    from bot_bottle_docker.images import ImageBuildError, ImageSpec, ensure_image

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    spec = ImageSpec(
        f"bb-test/none-{unique}", tmp_path / "Dockerfile", (), f"bb-test/no-base:{unique}"
    )
    with pytest.raises(ImageBuildError, match="not present") as info:
        ensure_image(spec, log_dir=tmp_path)
    assert info.value.hint and "base-image.sh" in info.value.hint


def test_a_failed_build_names_its_log_file(
    docker_client: docker.DockerClient, base_image: str, tmp_path: Path, unique: str
) -> None:
    from bot_bottle_docker.images import ImageBuildError, ImageSpec, ensure_image

    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo build-went-wrong-here && exit 3\n"
    )
    spec = ImageSpec(f"bb-test/failing-{unique}", tmp_path / "Dockerfile", (), base_image)
    lines: list[str] = []
    with pytest.raises(ImageBuildError) as info:
        ensure_image(spec, log_dir=tmp_path, progress=lines.append)
    log_path = next(tmp_path.glob("build-*.log"))
    assert str(log_path) in (info.value.hint or "")
    assert "build-went-wrong-here" in log_path.read_text()
    # Progress showed the steps as they ran.
    assert any("RUN echo build-went-wrong-here" in line for line in lines)
    # Nothing half-built is left behind under the tag.
    assert not docker_client.images.list(name=f"bb-test/failing-{unique}")


def test_a_third_party_detector_installed_on_the_host_runs_in_the_bundle(
    docker_client: docker.DockerClient, base_image: str, tmp_path: Path, uv: str
) -> None:
    """A user's install (not editable): core, sidecars and the Docker backend from their source
    directories, a third-party DLP plugin from a wheel that no longer exists
    anywhere but in site-packages. The image gets what the host runs."""
    from tests.conftest import REPO, run

    venv = tmp_path / "venv"
    assert (
        run([uv, "venv", "--quiet", "--seed", "--python", sys.executable, str(venv)]).returncode
        == 0
    )
    wheels = tmp_path / "wheels"
    acme = str(REPO / "examples/plugins/acme-detector")
    r = run([uv, "build", "-q", "--python", sys.executable, "--wheel", "-o", str(wheels), acme])
    assert r.returncode == 0, r.stderr
    sources = [str(REPO / "core"), str(REPO / "sidecars"), *map(str, wheels.glob("*.whl"))]
    r = run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin/python"), *sources])
    assert r.returncode == 0, r.stderr
    # The Docker plugin builds the image (its build needs no docker SDK). Its
    # dependencies are installed already: resolved again, uv would take core
    # and sidecars from the workspace, editable.
    docker_plugin = str(REPO / "plugins/docker")
    r = run([uv, "pip", "install", "--quiet", "--no-deps", "--python", str(venv / "bin/python"),
             docker_plugin])  # fmt: skip
    assert r.returncode == 0, r.stderr
    shutil.rmtree(wheels)

    env = {**os.environ, "BOT_BOTTLE_HOME": str(tmp_path / "home")}
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    r = run(
        [
            str(venv / "bin/python"),
            "-m",
            "bot_bottle_docker.bundle_image",
            "--base-image",
            base_image,
        ],
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    if "building image" in r.stderr:
        # (A rerun with nothing changed reuses the image instead.)
        assert "repacking installed bot-bottle-example-acme 0.1.0" in r.stderr
        assert "repacking installed bot-bottle-sidecars" in r.stderr
    tag = r.stdout.strip()

    script = (
        "from bot_bottle.plugins import PluginHost\n"
        "from bot_bottle.contracts.dlp import Direction, ScanContext\n"
        "d = PluginHost().create('dlp_detectors', 'acme_tokens')\n"
        "print(type(d).__module__)\n"
    )
    out = _python_in(docker_client, tag, script)
    assert out.decode().strip() == "bot_bottle_example_acme.detector"


def test_old_images_of_a_repository_are_pruned_after_a_build(
    docker_client: docker.DockerClient, base_image: str, tmp_path: Path, unique: str
) -> None:
    from bot_bottle_docker.images import KEEP_IMAGES, ImageSpec, ensure_image

    repo = f"bb-test/prune-{unique}"
    (tmp_path / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG N\n")
    tags = []
    try:
        for n in range(KEEP_IMAGES + 1):
            spec = ImageSpec(
                repo, tmp_path / "Dockerfile", (), base_image, build_args={"N": str(n)}
            )
            tags.append(ensure_image(spec, log_dir=tmp_path, prune_min_age=0).tag)
            time.sleep(1.1)  # CreatedAt has one-second resolution
        left = {t for image in docker_client.images.list(name=repo) for t in image.tags}
        assert left == set(tags[1:])
        # A young image beyond the newest three is kept (another run may be using it).
        spec = ImageSpec(repo, tmp_path / "Dockerfile", (), base_image, build_args={"N": "x"})
        tags.append(ensure_image(spec, log_dir=tmp_path).tag)
        left = {t for image in docker_client.images.list(name=repo) for t in image.tags}
        assert left == set(tags[1:])
    finally:
        for tag in tags:
            with contextlib.suppress(Exception):
                docker_client.images.remove(tag)


def test_a_multi_stage_build_leaves_no_untagged_stage_image(
    docker_client: docker.DockerClient, base_image: str, tmp_path: Path, unique: str
) -> None:
    from bot_bottle_docker.images import STAGE_LABEL, ImageSpec, ensure_image

    repo = f"bb-test/stages-{unique}"
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\n"
        "FROM ${BASE_IMAGE} AS install\n"
        f'LABEL {STAGE_LABEL}="install"\n'
        f"RUN echo {unique} > /built\n"
        "FROM ${BASE_IMAGE}\n"
        "COPY --from=install /built /built\n"
    )
    before = {i.id for i in docker_client.images.list(filters={"dangling": True})}
    spec = ImageSpec(repo, tmp_path / "Dockerfile", (), base_image)
    tag = ensure_image(spec, log_dir=tmp_path).tag
    try:
        stages = docker_client.images.list(
            filters={"dangling": True, "label": f"{STAGE_LABEL}=install"}
        )
        assert [i.id for i in stages if i.id not in before] == []
    finally:
        docker_client.images.remove(tag, force=True)
