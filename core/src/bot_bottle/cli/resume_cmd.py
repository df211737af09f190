"""``bot-bottle resume NAME|SLUG``: a fresh bottle from a snapshot, with its policy.

The agent's filesystem comes from the snapshot; everything else is new: a
new CA, new keys, credentials read again from the host. The policy (egress
routes, credential bindings, git-gate repos, supervise) is the snapshot's;
when the manifest changed since, the preflight shows the difference and
asks which to use (``--use-snapshot-policy`` / ``--use-current-manifest``
without a terminal). A SLUG whose state was preserved after a non-zero exit
is committed first (as snapshot SLUG) and resumed the same way.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    from bot_bottle.cli.launch_common import add_gvisor_arg

    p = sub.add_parser(
        "resume",
        help="start a fresh bottle from a snapshot (or a preserved bottle), with its policy",
    )
    p.add_argument("target", metavar="NAME|SLUG", help="a snapshot, or a preserved bottle's slug")
    p.add_argument(
        "--cwd",
        type=_path,
        help="host directory mounted at /workspace in the agent (default: none)",
    )
    p.add_argument("--label", help="a free-text label shown by 'list active'")
    add_gvisor_arg(p, help="do not use gVisor (runsc)")
    policy = p.add_mutually_exclusive_group()
    policy.add_argument(
        "--use-snapshot-policy",
        dest="policy",
        action="store_const",
        const="snapshot",
        help="if the manifest changed since the snapshot: keep the snapshot's policy",
    )
    policy.add_argument(
        "--use-current-manifest",
        dest="policy",
        action="store_const",
        const="current",
        help="if the manifest changed since the snapshot: use the manifest as it is now",
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="show the plan; create nothing")
    p.add_argument("--timings", action="store_true", help="print phase timings to stderr")
    p.add_argument("cmd", nargs="*", help="-- CMD [ARG...]: run CMD headless instead of attaching")
    p.set_defaults(handler=run)


def _path(value: str) -> Any:
    from pathlib import Path

    return Path(value)


def _choose_policy(args: argparse.Namespace, diff: list[str], interactive: bool) -> str:
    import sys

    from bot_bottle.errors import BotBottleError
    from bot_bottle.termtext import visible

    if not diff:
        return "snapshot"
    sys.stderr.write("the manifest changed since the snapshot (snapshot -> now):\n")
    for line in diff:
        sys.stderr.write(f"  {visible(line, limit=300)}\n")
    if args.policy:
        return str(args.policy)
    if not (interactive and sys.stdin.isatty()):
        raise BotBottleError(
            "the bottle's manifest changed since the snapshot; which policy to use?",
            hint="pass --use-snapshot-policy or --use-current-manifest",
        )
    answer = input("use the [s]napshot's policy or the [c]urrent manifest? ").strip().lower()
    if answer in ("s", "snapshot"):
        return "snapshot"
    if answer in ("c", "current"):
        return "current"
    raise BotBottleError("no policy chosen", hint="answer 's' or 'c'")


def _record_for(target: str, host: Any, *, dry_run: bool = False) -> Any:
    """The snapshot named ``target``, or a preserved bottle committed now
    (None in a dry run, which commits nothing)."""
    import sys

    from bot_bottle import snapshots
    from bot_bottle.errors import BotBottleError
    from bot_bottle.plan import _SLUG_RE
    from bot_bottle.state import StateDir

    if snapshots.has_record(target):
        return snapshots.load_record(target)
    state = StateDir.for_slug(target) if _SLUG_RE.match(target) else None
    if state is not None and state.preserved:
        if dry_run:
            sys.stderr.write(
                f"bottle {target} is preserved: 'resume' commits it as snapshot {target} "
                "first (a dry run commits nothing), then resumes that\n"
            )
            return None
        record = snapshots.commit_bottle(
            target, target, host=host, progress=lambda line: sys.stderr.write(f"  {line}\n")
        )
        # The snapshot holds it now: the kept container and state dir go.
        host.create("freezers", record.backend).release(target)
        state.remove()
        return record
    if state is not None and state.path.exists():
        raise BotBottleError(
            f"bottle {target} is running, not preserved",
            hint=f"'bot-bottle commit {target}' snapshots it; resume the snapshot",
        )
    raise BotBottleError(
        f"no snapshot and no preserved bottle called {target!r}",
        hint="'bot-bottle snapshots' lists the snapshots",
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import os
    import sys

    from bot_bottle import snapshots
    from bot_bottle.cli.launch_common import plan_agent, print_preflight
    from bot_bottle.errors import BotBottleError
    from bot_bottle.imagebuild import extra_ca_from_env
    from bot_bottle.launcher import execute
    from bot_bottle.manifest.store import Manifest
    from bot_bottle.plugins import PluginHost

    interactive = not args.cmd
    host = PluginHost().load()
    record = _record_for(args.target, host, dry_run=args.dry_run)
    if record is None:
        return 0
    snap_bottle = record.effective_bottle()
    try:
        current = Manifest.discover(host=host).agent(record.agent)
    except BotBottleError as exc:
        raise BotBottleError(
            f"snapshot {record.name}'s agent {record.agent!r} cannot be loaded: {exc.message}",
            hint="restore the agent file (its prompt and skills come from it)",
        ) from None
    diff = snapshots.manifest_diff(record.bottle, current.bottle.model_dump(mode="json"))
    policy = _choose_policy(args, diff, interactive)
    if policy == "snapshot":
        agent = snapshots.agent_with_bottle(host, record.agent, snap_bottle)
    else:
        agent = current
    launch = plan_agent(
        args,
        host,
        agent,
        backend_name=record.backend,
        label=args.label or record.label,
        interactive=interactive,
    )
    plan, backend, provider = launch.plan, launch.backend, launch.provider
    if policy == "snapshot":
        plan = snapshots.with_live_routes(plan, record.routes)

    def say(line: str) -> None:
        # Build output can carry text from the snapshot's capability blocks.
        from bot_bottle.termtext import visible

        sys.stderr.write(f"  {visible(line)}\n")

    progress = say
    # A dry run builds nothing: the capability image is named at launch.
    image = (
        None
        if args.dry_run and record.capabilities
        else snapshots.resume_image(
            record, host=host, extra_ca=extra_ca_from_env(os.environ), progress=progress
        )
    )
    plan = dataclasses.replace(plan, agent_image=image, snapshot=record.name)
    prepared = backend.prepare(plan)
    sys.stderr.write(
        f"resuming snapshot {record.name} (taken {record.created_at} from {record.source_slug}"
        f"; policy: {'snapshot' if policy == 'snapshot' else 'current manifest'}"
        f"{f'; capability blocks: {len(record.capabilities)}' if record.capabilities else ''})\n"
    )
    print_preflight(plan, prepared, backend)
    if args.dry_run:
        return 0
    if interactive and not args.yes:
        if not sys.stdin.isatty():
            sys.stderr.write("not a terminal: pass --yes to resume without confirmation\n")
            return 1
        if input("resume? [y/N] ").strip().lower() not in ("y", "yes"):
            return 1
    from bot_bottle import audit

    audit.record(
        "snapshot-resume",
        bottle=plan.slug,
        snapshot=record.name,
        policy=policy,
        manifest_changed=bool(diff),
    )
    report = execute(
        plan,
        backend=backend,
        provider=provider,
        mode="attach" if interactive else "run",
        argv=list(args.cmd),
        options=agent.resolved_bottle.provider_options,
        prepared=prepared,
    )
    if args.timings:
        parts = " ".join(f"{k}={v:.2f}s" for k, v in report.timings.items())
        sys.stderr.write(f"timings: {parts}\n")
    if report.preserved:
        sys.stderr.write(f"state kept for {plan.slug} (exit {report.exit_code})\n")
    return report.exit_code
