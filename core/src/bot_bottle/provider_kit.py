"""Helpers for agent providers: the provisioning steps most providers share.

Everything here goes through :class:`~bot_bottle.contracts.backend.RunningBottle`
(``exec`` / ``copy_in``) only, so it works on every backend. Built-in and
drop-in providers use the same helpers::

    from bot_bottle import provider_kit as kit

    def provision(self, bottle, ctx):
        kit.prologue(bottle, ctx, skills_dir=SKILLS_DIR, prompt_path=PROMPT_PATH)
        kit.run_as_agent(bottle, ctx.plan, ["my-agent", "register", ...], what="...")

Conventions the helpers rely on: commands that change system state run as
``root``; commands that touch the agent's own files run as the agent user
through ``runuser -u <user> --`` with ``HOME``/``USER`` set explicitly. A
backend's ``exec`` may run as root whatever the image's ``USER`` says (VM
backends do), and a tool run as root with root's HOME writes its config
where the agent never reads it (the seed's ``claude mcp add`` bug).
``runuser`` without ``-l``: a login shell needs PAM session files minimal
images lack, and hangs.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot_bottle.contracts.provider import GUEST_CA_PATH
from bot_bottle.errors import BotBottleError
from bot_bottle.names import ENV_NAME_RE

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import ExecResult, RunningBottle
    from bot_bottle.contracts.provider import ImageSpec, ProviderPlan, ProvisionContext
    from bot_bottle.imagebuild import ImageSpec as BuildSpec

#: The system bundle, with the bottle CA appended by :func:`install_ca`.
GUEST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: Environment that makes the common clients trust the bottle CA: Node (and
#: Bun), OpenSSL, Python requests, curl, git. The bottle CA alone: every
#: connection the agent makes goes through egress, which presents
#: certificates signed by it. The plan sets these in every agent.
CA_ENV: Mapping[str, str] = dict.fromkeys(
    (
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ),
    GUEST_CA_PATH,
)
#: The value agents see where a credential would be; egress strips it and
#: injects the real one.
PLACEHOLDER = "bot-bottle-placeholder-egress-injects-the-real-token"


class ProvisionError(BotBottleError):
    """A provisioning step failed inside the bottle."""


def env_var_name(value: str) -> str:
    """Validator for options that name a *host* environment variable.

    The message never repeats the value: a user who pasted the token itself
    where its variable's name belongs must not see it echoed in a log.
    """
    if not ENV_NAME_RE.match(value):
        raise ValueError(
            "must be the NAME of a host environment variable (letters, digits, '_'), "
            "not the token itself: export the token and give its variable's name"
        )
    return value


def read_host_token(host_env: Mapping[str, str], name: str, *, option: str, hint: str) -> str:
    """The value of host variable ``name``; a clear error when unset or empty."""
    value = host_env.get(name, "")
    if not value.strip():
        state = "is empty" if name in host_env else "is not set"
        raise BotBottleError(
            f"{option} names the host environment variable {name}, which {state}",
            hint=hint,
        )
    return value.strip()


def dockerfile_beside(obj: object) -> Path:
    """The ``Dockerfile`` next to the module that defines ``obj``'s class.

    The convention for providers (built-in and drop-in alike): ship the
    image's Dockerfile beside the provider module.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    return Path(inspect.getfile(cls)).resolve().with_name("Dockerfile")


def image_from(obj: object, dockerfile: Path | None) -> ImageSpec:
    """The image spec for a provider whose options may name a ``dockerfile``
    (a host path, ``~`` expanded): that one, else :func:`dockerfile_beside`."""
    from bot_bottle.contracts.provider import ImageSpec

    if dockerfile is not None:
        return ImageSpec(dockerfile=dockerfile.expanduser())
    return ImageSpec(dockerfile=dockerfile_beside(obj))


def check(result: ExecResult, what: str) -> ExecResult:
    """Raise :class:`ProvisionError` naming ``what`` when ``result`` failed."""
    if not result.ok:
        tail = (result.stderr or result.stdout).decode("utf-8", "replace").strip()
        tail = tail[-400:] if tail else "no output"
        raise ProvisionError(f"{what} failed (exit {result.exit_code}): {tail}")
    return result


def agent_argv(plan: ProviderPlan, argv: Sequence[str], env: Mapping[str, str] = {}) -> list[str]:
    """``argv`` run as the plan's agent user with its HOME, from root."""
    base = {"HOME": plan.guest_home, "USER": plan.user, "LOGNAME": plan.user}
    pairs = [f"{k}={v}" for k, v in {**base, **env}.items()]
    return ["runuser", "-u", plan.user, "--", "env", *pairs, *argv]


def run_as_agent(
    bottle: RunningBottle,
    plan: ProviderPlan,
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
) -> ExecResult:
    """Run ``argv`` as the agent user (HOME set) and fail loudly."""
    return check(bottle.exec(agent_argv(plan, argv, env or {}), user="root"), what)


def run_as_root(bottle: RunningBottle, argv: Sequence[str], *, what: str) -> ExecResult:
    return check(bottle.exec(list(argv), user="root"), what)


def install_ca(bottle: RunningBottle, ctx: ProvisionContext) -> None:
    """Put the bottle CA at :data:`GUEST_CA_PATH` and into the system bundle.

    Appends it to the distribution's bundle file instead of running
    ``update-ca-certificates`` (about 2 s: it rebuilds every hash link); the
    file in ``/usr/local/share/ca-certificates`` makes a later
    ``update-ca-certificates`` keep it. Appending twice is avoided, so a
    provider may call this again on a resumed bottle.
    """
    script = (
        'if [ "$1" != "$2" ]; then install -D -m 0644 "$1" "$2" || exit 1; fi; '
        'first=$(sed -n 2p "$2"); '
        "for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do "
        '[ -f "$f" ] || continue; grep -qxF "$first" "$f" || cat "$2" >> "$f" || exit 1; '
        "done"
    )
    run_as_root(
        bottle,
        ["sh", "-c", script, "sh", ctx.ca_cert_path, GUEST_CA_PATH],
        what="installing the bottle CA",
    )


def prologue(
    bottle: RunningBottle, ctx: ProvisionContext, *, skills_dir: str, prompt_path: str
) -> None:
    """The steps every provider's ``provision`` starts with: trust the bottle
    CA (:func:`install_ca`), copy the skills to the plan's ``skills_dir``
    (else ``skills_dir``) and write a non-blank prompt to the plan's
    ``prompt_path`` (else ``prompt_path``), all as the agent user."""
    plan = ctx.plan
    install_ca(bottle, ctx)
    copy_skills(bottle, plan, ctx.skills, plan.skills_dir or skills_dir)
    if ctx.prompt.strip():
        write_file(bottle, plan, plan.prompt_path or prompt_path, ctx.prompt)


def apply_git_config(bottle: RunningBottle, ctx: ProvisionContext) -> None:
    """The plan's ``git config --global`` entries (git-gate ``insteadOf``
    rewrites, ``user.name``/``user.email``), as the agent user in its HOME.

    The launcher calls this after the provider's ``provision``, whatever the
    provider: every bottle with git-gate repos needs the rewrites, and the
    image needs ``git``.
    """
    if not ctx.git_config:
        return
    # One exec for all entries: each exec costs a round trip to the engine.
    # The key never contains '=' (url.<gate>.insteadOf, user.*); the value may.
    script = 'for kv in "$@"; do git config --global --add "${kv%%=*}" "${kv#*=}" || exit 1; done'
    argv = ["sh", "-c", script, "sh", *(f"{k}={v}" for k, v in ctx.git_config)]
    result = bottle.exec(agent_argv(ctx.plan, argv), user="root")
    if result.exit_code == 127 or b"git: not found" in result.stderr:
        raise ProvisionError(
            "the agent image has no git, but the bottle declares git-gate repos or a git_user",
            hint="install git in the provider's Dockerfile, or remove git_gate/git_user",
        )
    check(result, "git config")


def write_file(
    bottle: RunningBottle,
    plan: ProviderPlan,
    dest: str,
    content: str | bytes,
    *,
    mode: int = 0o644,
) -> None:
    """Write ``content`` to ``dest`` in the guest, as the agent user.

    Everything happens as the agent (the content goes in on stdin): a
    resumed bottle's home is the agent's own work, and a symbolic link it
    planted on the way to ``dest`` must not make a root copy or ``chown``
    write to a path only root may (the system, a host mount). As the agent,
    a link leads nowhere the agent could not write itself.
    """
    data = content.encode() if isinstance(content, str) else content
    # The file is private until its mode is set; folders get the usual umask.
    script = 'mkdir -p "$(dirname "$1")" && (umask 077 && cat > "$1") && chmod "$2" "$1"'
    argv = agent_argv(plan, ["sh", "-c", script, "sh", dest, f"{mode:o}"])
    check(bottle.exec(argv, user="root", stdin=data), f"writing {dest}")


def copy_skills(
    bottle: RunningBottle, plan: ProviderPlan, skills: Sequence[Path], skills_dir: str
) -> None:
    """Copy each host skill directory to ``<skills_dir>/<name>``, agent-owned.

    As the agent user, for the reason :func:`write_file` gives: a tar of the
    skills goes in on stdin and the agent's ``tar`` unpacks it.
    """
    if not skills:
        return
    for src in skills:
        if not src.is_dir():
            raise ProvisionError(
                f"skill {src.name!r} is not a directory on the host ({src})",
                hint="create it, or remove it from the bottle's or agent's skills",
            )
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for src in skills:
            tar.add(str(src), arcname=src.name)
    script = 'mkdir -p "$1" && tar -x --no-same-owner --no-same-permissions -C "$1"'
    argv = agent_argv(plan, ["sh", "-c", script, "sh", skills_dir])
    check(bottle.exec(argv, user="root", stdin=buf.getvalue()), "copying the skills")


def printable(text: str, limit: int = 60) -> str:
    """``text`` without control characters (they could drive the terminal)."""
    return "".join(c for c in text if c.isprintable())[:limit]


def agent_image_spec(
    provider: str,
    spec: ImageSpec,
    *,
    base_image: str | None = None,
    extra_ca: Path | None = None,
) -> BuildSpec:
    """What a backend builds for a provider's :class:`ImageSpec`: the one
    place an agent image's repository, base image and build args are decided.

    The repository is ``bot-bottle/agent-<provider>``; the base image is the
    spec's ``BASE_IMAGE`` build arg, else ``base_image``, else the default
    (:func:`bot_bottle.imagebuild.base_image_name`); the CA bundle option is
    ``extra_ca`` or ``BOT_BOTTLE_BUILD_CA_BUNDLE``.
    """
    from bot_bottle import imagebuild

    repository = f"bot-bottle/agent-{re.sub(r'[^a-z0-9._-]+', '-', provider.lower())}"
    return imagebuild.ImageSpec(
        repository=repository,
        dockerfile=spec.dockerfile,
        distributions=(),
        base_image=spec.build_args.get("BASE_IMAGE") or base_image or imagebuild.base_image_name(),
        extra_ca=extra_ca if extra_ca is not None else imagebuild.extra_ca_from_env(),
        build_args={k: v for k, v in spec.build_args.items() if k != "BASE_IMAGE"},
    )
