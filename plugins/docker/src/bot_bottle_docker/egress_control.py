"""Live egress of a running Docker bottle: the config file the bundle reads,
SIGHUP to the bundle's init (which forwards it to egress), the route table as
egress enforces it, and egress's log records from the bundle's log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot_bottle_sidecars.layout import DAEMON_USERS, PY

from bot_bottle.contracts.backend import EgressControl
from bot_bottle.errors import BotBottleError
from bot_bottle.plan import PROXY_PORT
from bot_bottle.state import StateDir

#: Runs in the bundle as supervise's user (it reads the same table the agent
#: can): no proxy, egress is a sibling on the bundle's loopback.
_FETCH = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(sys.argv[1], timeout=5) as r:
    sys.stdout.write(r.read(1048576).decode())
"""


class DockerEgressControl(EgressControl):
    def __init__(self, slug: str, bundle: Any) -> None:
        self.slug = slug
        self._bundle = bundle

    @property
    def config_path(self) -> Path:
        # run/etc is bind-mounted as a directory at /etc/bot-bottle: a rename
        # inside it is seen by the bundle (a single-file mount would not be).
        return StateDir.for_slug(self.slug).run_dir / "etc" / "egress" / "egress.json"

    def signal_reload(self) -> None:
        try:
            self._bundle.kill(signal="SIGHUP")
        except Exception as exc:
            raise BotBottleError(
                f"cannot signal the sidecars of bottle {self.slug}: {exc}",
                hint="is the bottle still running? 'bot-bottle list active'",
            ) from None

    def live_routes(self) -> dict[str, Any]:
        from bot_bottle.egress.config import EgressConfig

        host = EgressConfig.load(self.config_path).introspection_host
        user = DAEMON_USERS["supervise"].uid
        result = self._bundle.exec_run(
            [PY, "-c", _FETCH, f"http://{host}:{PROXY_PORT}/routes"],
            user=f"{user}:{user}",
            demux=True,
        )
        out, err = result.output if result.output else (b"", b"")
        if result.exit_code != 0:
            tail = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
            raise BotBottleError(
                f"cannot read the live egress table of bottle {self.slug}: {' '.join(tail)}",
                hint="the egress daemon may be restarting; try again in a few seconds",
            )
        data = json.loads(out or b"{}")
        return data if isinstance(data, dict) else {}

    def events(self, since: float | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True}
        if since is not None:
            kwargs["since"] = since
        raw: bytes = self._bundle.logs(**kwargs)
        out: list[dict[str, Any]] = []
        for line in raw.decode("utf-8", "replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out
