"""A ``BOT_BOTTLE_HOME`` with one bottle and one agent, for manifest tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


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
