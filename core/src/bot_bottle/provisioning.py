"""Provisioning steps every provider needs, built on ``RunningBottle.exec``/``copy_in``.

Providers call these from ``AgentProvider.provision``. Before ``provision``
runs, the launcher has copied the bottle CA to ``ctx.ca_cert_path`` (mode
0644, root-owned); the agent's CA variables (``NODE_EXTRA_CA_CERTS``,
``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``,
``GIT_SSL_CAINFO``) already point at it, and the proxy variables at egress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot_bottle.errors import BotBottleError

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import ExecResult, RunningBottle
    from bot_bottle.contracts.provider import ProvisionContext


#: Linux caps one argument at 128 KiB (MAX_ARG_STRLEN); stay well below.
_ARG_LIMIT = 100_000


def _check(result: ExecResult, what: str) -> None:
    if not result.ok:
        err = result.stderr.decode("utf-8", "replace").strip()[-300:]
        raise BotBottleError(f"provisioning failed: {what} (exit {result.exit_code}): {err}")


def trust_ca(bottle: RunningBottle, ctx: ProvisionContext) -> None:
    """Add the bottle CA to the system trust store (where the image has one).

    Appends it to the distribution's bundle file instead of running
    ``update-ca-certificates`` (about 2 s: it rebuilds every hash link);
    the certificate also sits in ``/usr/local/share/ca-certificates``, so a
    later ``update-ca-certificates`` keeps it.
    """
    script = (
        "for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do "
        '[ -f "$f" ] && cat "$1" >> "$f"; done; exit 0'
    )
    result = bottle.exec(["sh", "-c", script, "sh", ctx.ca_cert_path], user="root")
    _check(result, "adding the bottle CA to the trust store")


def apply_git_config(bottle: RunningBottle, ctx: ProvisionContext) -> None:
    """``git config --global`` entries (git-gate insteadOf, user.name/email)."""
    if not ctx.git_config:
        return
    # One exec for all entries: each exec costs a round trip to the engine.
    script = 'for kv in "$@"; do git config --global --add "${kv%%=*}" "${kv#*=}" || exit 1; done'
    # The key never contains '=' (url.<gate>.insteadOf, user.*); the value may.
    argv = ["sh", "-c", script, "sh", *(f"{k}={v}" for k, v in ctx.git_config)]
    _check(bottle.exec(argv, user=ctx.plan.user), "git config")


def copy_skills(bottle: RunningBottle, ctx: ProvisionContext) -> None:
    if not ctx.skills or not ctx.plan.skills_dir:
        return
    for skill in ctx.skills:
        if not skill.is_dir():
            raise BotBottleError(
                f"skill directory {skill} does not exist",
                hint="create it or remove the skill from the bottle/agent",
            )
        bottle.copy_in(skill, f"{ctx.plan.skills_dir}/{skill.name}", owner=ctx.plan.user)


def write_prompt(bottle: RunningBottle, ctx: ProvisionContext) -> None:
    if not ctx.prompt or not ctx.plan.prompt_path:
        return
    path = ctx.plan.prompt_path
    if len(ctx.prompt.encode()) < _ARG_LIMIT:
        # As an argument: no stdin, so the backend can use its fast exec path.
        script = 'mkdir -p "$(dirname "$1")" && printf "%s" "$2" > "$1"'
        result = bottle.exec(["sh", "-c", script, "sh", path, ctx.prompt], user=ctx.plan.user)
    else:
        result = bottle.exec(
            ["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path],
            user=ctx.plan.user,
            stdin=ctx.prompt.encode(),
        )
    _check(result, f"writing the prompt to {path}")
