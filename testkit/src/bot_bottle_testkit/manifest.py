"""A ``BOT_BOTTLE_HOME`` with one bottle and one agent, for manifest tests;
:func:`shell_agent` resolves such an agent on the shell provider, for plans."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot_bottle.manifest.store import ResolvedAgent
    from bot_bottle.plugins import PluginHost

#: A shell bottle with supervise and one git-gate repo whose deploy key is at
#: ``KEY`` (replace it with the key file's path).
GIT_GATE_BOTTLE = """\
---
agent_provider:
  template: shell
supervise: true
git_gate:
  repos:
    - name: proj
      url: ssh://git@git.example.test/me/proj.git
      host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHM/us+yJ8sNmo4On6iamuGgHQiQ62/N1DN4AwBLqQy2
      key: {provider: static, path: KEY}
---
"""


def write_home(
    root: Path,
    bottle_frontmatter: str,
    *,
    bottle: str = "dev",
    agent: str = "coder",
    agent_body: str = "You code.\n",
) -> Path:
    """``root/home`` holding ``bottles/<bottle>.md`` (``bottle_frontmatter``,
    dedented, as its YAML) and ``agents/<agent>.md`` using that bottle."""
    home = root / "home"
    (home / "bottles").mkdir(parents=True)
    (home / "agents").mkdir(parents=True)
    (home / "bottles" / f"{bottle}.md").write_text(
        f"---\n{textwrap.dedent(bottle_frontmatter)}---\n"
    )
    (home / "agents" / f"{agent}.md").write_text(f"---\nbottle: {bottle}\n---\n{agent_body}")
    return home


def shell_agent(
    home: Path, host: PluginHost, bottle_md: str, *, agent_body: str = ""
) -> ResolvedAgent:
    """Agent ``a1`` (its prompt ``agent_body``) on bottle ``b1`` (``bottle_md``,
    the whole file) in ``home``, resolved with the shell provider registered
    in ``host``."""
    from bot_bottle import Registration, hookimpl
    from bot_bottle.manifest.store import Manifest
    from bot_bottle_shell.provider import ShellProvider

    class _Shell:
        @hookimpl
        def bot_bottle_register_agent_providers(self) -> list[Registration[object]]:
            return [Registration("shell", ShellProvider)]

    (home / "bottles").mkdir(exist_ok=True)
    (home / "agents").mkdir(exist_ok=True)
    (home / "bottles/b1.md").write_text(bottle_md)
    (home / "agents/a1.md").write_text(f"---\nbottle: b1\n---\n{agent_body}")
    host.register(_Shell(), "shell-test")
    return Manifest(home=home, host=host).agent("a1")
