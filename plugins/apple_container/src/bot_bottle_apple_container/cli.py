"""The ``container`` CLI, argv only, with its JSON outputs parsed.

Every command shape used here comes from apple/container's
``docs/command-reference.md`` and, for ``network create --internal``, from
its ``NetworkCreate.swift`` (``@Flag(name: .customLong("internal"), help:
"Restrict to host-only network")``); the README's table lists each one.
The JSON shapes read (``ls --format json``, ``inspect``, ``network ls
--format json``) are those of the CLI's ``ContainerSnapshot`` /
``NetworkState`` encodings; nothing here has run against the real CLI yet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from bot_bottle.errors import BotBottleError

#: Points at another ``container`` executable (the tests' contract fake).
ENV_CLI = "BOT_BOTTLE_APPLE_CONTAINER_CLI"


class ContainerCLIError(BotBottleError):
    """A ``container`` command failed or answered something unreadable."""


def cli_path() -> str | None:
    override = os.environ.get(ENV_CLI)
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("container")


class ContainerCLI:
    def __init__(self) -> None:
        found = cli_path()
        if found is None:
            raise ContainerCLIError(
                "Apple's container CLI is not on PATH",
                hint="install it from github.com/apple/container (macOS 26+), then "
                "'container system start'",
            )
        self.exe = found

    def argv(self, *args: str) -> list[str]:
        return [self.exe, *args]

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        # stdout is always a pipe: the seed's smolvm exec silently failed
        # when handed a regular file, and a pipe costs nothing here.
        proc = subprocess.run(
            self.argv(*args),
            input=stdin,
            capture_output=True,
            check=False,
            env={**os.environ, **env} if env else None,
        )
        if check and proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()[-400:]
            raise ContainerCLIError(
                f"'container {' '.join(args[:2])}' failed (exit {proc.returncode}): "
                f"{err or '(no output)'}",
                hint="'container system status' shows whether the service runs",
            )
        return proc

    def json(self, *args: str) -> Any:
        out = self.run(*args).stdout
        try:
            return json.loads(out or b"null")
        except ValueError:
            raise ContainerCLIError(
                f"'container {' '.join(args[:2])}' printed something that is not JSON: "
                f"{out[:120]!r}",
                hint="this container CLI version may be unsupported; 'container --version'",
            ) from None

    def containers(self, *, all_: bool = False) -> list[dict[str, Any]]:
        args = ["ls", "--all", "--format", "json"] if all_ else ["ls", "--format", "json"]
        data = self.json(*args)
        if not isinstance(data, list):
            raise ContainerCLIError(f"'container ls' did not print a JSON list: {str(data)[:120]}")
        return [c for c in data if isinstance(c, dict)]

    def networks(self) -> list[dict[str, Any]]:
        data = self.json("network", "ls", "--format", "json")
        if not isinstance(data, list):
            raise ContainerCLIError("'container network ls' did not print a JSON list")
        return [n for n in data if isinstance(n, dict)]

    def inspect(self, name: str) -> dict[str, Any] | None:
        proc = self.run("inspect", name, check=False)
        if proc.returncode != 0:
            return None
        try:
            data = json.loads(proc.stdout or b"null")
        except ValueError:
            raise ContainerCLIError(
                f"'container inspect {name}' printed something not JSON"
            ) from None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return data[0]
        return None


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    cfg = obj.get("configuration") or obj.get("config") or {}
    labels = cfg.get("labels") if isinstance(cfg, dict) else None
    return {str(k): str(v) for k, v in (labels or {}).items()}


def id_of(obj: Mapping[str, Any]) -> str:
    cfg = obj.get("configuration") or obj.get("config") or {}
    return str((cfg.get("id") if isinstance(cfg, dict) else None) or obj.get("id") or "?")


def address_on(obj: Mapping[str, Any], network: str) -> str | None:
    """The container's IPv4 address on ``network`` (``networks[].address`` is CIDR)."""
    for att in obj.get("networks") or []:
        if isinstance(att, dict) and att.get("network") == network and att.get("address"):
            return str(att["address"]).split("/")[0]
    return None


def env_file_lines(env: Mapping[str, str]) -> str:
    for k, v in env.items():
        if "\n" in v or "\n" in k:
            raise BotBottleError(
                f"environment variable {k} has a newline: --env-file cannot carry it"
            )
    return "".join(f"{k}={v}\n" for k, v in env.items())


__all__: Sequence[str] = ["ENV_CLI", "ContainerCLI", "ContainerCLIError", "cli_path"]
