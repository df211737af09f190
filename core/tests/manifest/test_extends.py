"""``extends:`` composition and the agent overlay."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot_bottle.manifest import Manifest, ManifestError
from bot_bottle.manifest.models import StaticKeyOptions

from .conftest import HOST_KEY, MINIMAL_BOTTLE, Write

REPO = f"""
git_gate:
  repos:
    - name: widgets
      url: ssh://git@git.example.test/team/widgets.git
      host_key: {HOST_KEY}
      key: {{provider: static, path: ~/.ssh/parent_key}}
"""


def _agent(write: Write, home: Path, bottle: str, extra: str = "") -> None:
    write(home / "agents", "a", f"bottle: {bottle}\n{extra}", "prompt")


def test_a_bottle_without_extends_is_itself(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "base", MINIMAL_BOTTLE + "\nenv: {A: '1'}")
    b = manifest.bottle("base").bottle
    assert b.chain == ["base"] and b.env == {"A": "1"} and b.supervise is True


def test_child_inherits_everything_it_does_not_declare(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(
        home / "bottles",
        "base",
        MINIMAL_BOTTLE + "\nsupervise: false\nskills: [s1]\negress: {routes: [{host: a.test}]}",
    )
    write(home / "bottles", "child", "extends: base")
    b = manifest.bottle("child").bottle
    assert b.chain == ["child", "base"]
    assert b.agent_provider.template == "claude"
    assert b.supervise is False and b.skills == ["s1"]
    assert [r.host for r in b.egress.routes] == ["a.test"]


def test_env_is_merged_child_wins(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "base", MINIMAL_BOTTLE + "\nenv: {A: p, B: p}")
    write(home / "bottles", "child", "extends: base\nenv: {B: c, C: c}")
    assert manifest.bottle("child").bottle.env == {"A": "p", "B": "c", "C": "c"}


def test_git_user_overlays_per_field(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "base", MINIMAL_BOTTLE + "\ngit_user: {name: Parent, email: p@x}")
    write(home / "bottles", "child", "extends: base\ngit_user: {email: c@x}")
    user = manifest.bottle("child").bottle.git_user
    assert user is not None and (user.name, user.email) == ("Parent", "c@x")


def test_other_blocks_are_replaced(write: Write, home: Path, manifest: Manifest) -> None:
    write(
        home / "bottles",
        "base",
        MINIMAL_BOTTLE
        + "\nskills: [a, b]\negress: {log: full, routes: [{host: a.test}, {host: b.test}]}"
        + "\nextra_hosts: {x.test: 10.0.0.1}",
    )
    write(
        home / "bottles",
        "child",
        "extends: base\nagent_provider: {template: codex}\nskills: [c]"
        "\negress: {routes: [{host: c.test}]}\nextra_hosts: {y.test: 10.0.0.2}",
    )
    b = manifest.bottle("child").bottle
    assert b.agent_provider.template == "codex"
    assert b.skills == ["c"]
    assert [r.host for r in b.egress.routes] == ["c.test"] and b.egress.log == "blocks"
    assert b.extra_hosts == {"y.test": "10.0.0.2"}


def test_repos_merge_by_name_field_by_field(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "base", MINIMAL_BOTTLE + REPO)
    write(
        home / "bottles",
        "child",
        "extends: base\ngit_gate:\n  repos:\n"
        "    - name: widgets\n      key: {provider: static, path: ~/.ssh/child_key}\n"
        "    - name: other\n      url: ssh://git@o.test/o.git\n"
        f"      host_key: {HOST_KEY}\n      key: {{provider: static, path: /k}}\n",
    )
    resolved = manifest.bottle("child")
    repos = {r.name: r for r in resolved.bottle.repos}
    assert list(repos) == ["widgets", "other"]
    assert repos["widgets"].url.host == "git.example.test"  # from the parent
    assert repos["widgets"].key.options == {"path": "~/.ssh/child_key"}  # child wins
    options = resolved.key_options["widgets"]
    assert isinstance(options, StaticKeyOptions) and options.path == "~/.ssh/child_key"


def test_an_empty_repo_list_drops_inherited_repos(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "base", MINIMAL_BOTTLE + REPO)
    write(home / "bottles", "child", "extends: base\ngit_gate: {repos: []}")
    assert manifest.bottle("child").bottle.repos == []


def test_a_repo_incomplete_after_merging_is_an_error(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "base", MINIMAL_BOTTLE)
    path = write(home / "bottles", "child", "extends: base\ngit_gate:\n  repos:\n    - name: x\n")
    with pytest.raises(ManifestError) as e:
        manifest.bottle("child")
    assert e.value.file == path and e.value.line == 5
    assert "repo 'x' has no url, host_key, key" in str(e.value)
    assert "ssh-keyscan" in str(e.value)


def test_three_step_chain(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "grand", MINIMAL_BOTTLE + "\nenv: {A: g, B: g, C: g}")
    write(home / "bottles", "parent", "extends: grand\nenv: {B: p, C: p}")
    write(home / "bottles", "child", "extends: parent\nenv: {C: c}")
    b = manifest.bottle("child").bottle
    assert b.chain == ["child", "parent", "grand"]
    assert b.env == {"A": "g", "B": "p", "C": "c"}
    assert [p.name for p in manifest.bottle("child").files] == ["child.md", "parent.md", "grand.md"]


def test_self_extends(write: Write, home: Path, manifest: Manifest) -> None:
    path = write(home / "bottles", "loop", MINIMAL_BOTTLE + "\nextends: loop")
    with pytest.raises(ManifestError, match="bottle 'loop' extends itself") as e:
        manifest.bottle("loop")
    assert (e.value.file, e.value.line) == (path, 3)


def test_two_node_cycle_names_the_chain(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "a", "extends: b")
    write(home / "bottles", "b", "extends: a")
    with pytest.raises(ManifestError, match="extends cycle: a -> b -> a"):
        manifest.bottle("a")


def test_three_node_cycle_names_the_chain(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "a", "extends: b")
    write(home / "bottles", "b", "extends: c")
    write(home / "bottles", "c", "extends: a")
    with pytest.raises(ManifestError, match="extends cycle: b -> c -> a -> b"):
        manifest.bottle("b")


def test_missing_parent_lists_available_bottles(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "base", MINIMAL_BOTTLE)
    path = write(home / "bottles", "child", "# comment\nextends: basee")
    with pytest.raises(ManifestError) as e:
        manifest.bottle("child")
    assert (e.value.file, e.value.line) == (path, 3)
    assert "bottle 'basee' does not exist (available: base, child)" in str(e.value)


def test_extends_must_be_a_name(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "child", "extends: [a, b]")
    with pytest.raises(ManifestError, match="extends"):
        manifest.bottle("child")


def test_diamond_resolves_shared_ancestors_once(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "root", MINIMAL_BOTTLE)
    write(home / "bottles", "left", "extends: root\nenv: {L: '1'}")
    write(home / "bottles", "right", "extends: root\nenv: {R: '1'}")
    for name, bottle in (("one", "left"), ("two", "right"), ("three", "left")):
        write(home / "agents", name, f"bottle: {bottle}")
    for name in ("one", "two", "three"):
        manifest.agent(name)
    parsed = [p.name for p in manifest.parsed_files]
    assert sorted(parsed) == sorted(
        ["one.md", "two.md", "three.md", "left.md", "right.md", "root.md"]
    )


def test_a_bottle_needs_a_provider_somewhere_in_its_chain(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "bare", "env: {A: '1'}")
    with pytest.raises(ManifestError, match="sets no agent_provider"):
        manifest.bottle("bare")


def test_extra_host_pins_must_agree(write: Write, home: Path, manifest: Manifest) -> None:
    write(
        home / "bottles",
        "b",
        MINIMAL_BOTTLE
        + "\nextra_hosts: {git.example.test: 10.0.0.1}"
        + REPO
        + "      extra_hosts: {git.example.test: 10.0.0.2}\n",
    )
    with pytest.raises(ManifestError, match="the sidecars share one hosts file"):
        manifest.bottle("b")


# -- the agent on top of its bottle ----------------------------------------------------


def test_agent_git_user_overlays_with_provenance(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "b", MINIMAL_BOTTLE + "\ngit_user: {name: Bottle, email: b@x}")
    _agent(write, home, "b", "git_user: {name: Agent}")
    a = manifest.agent("a")
    gi = a.git_identity
    assert (gi.name, gi.name_from, gi.email, gi.email_from) == ("Agent", "agent", "b@x", "bottle")
    assert gi.summary() == "Agent (agent) <b@x> (bottle)"
    assert a.git_user is not None and a.git_user.name == "Agent"


def test_agent_skills_add_to_the_bottles(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "b", MINIMAL_BOTTLE + "\nskills: [x, y]")
    _agent(write, home, "b", "skills: [y, z]")
    assert manifest.agent("a").skills == ("x", "y", "z")


def test_agent_prompt_is_the_body(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "b", MINIMAL_BOTTLE)
    write(home / "agents", "a", "bottle: b", "\nLine one.\n\nLine two.\n")
    assert manifest.agent("a").prompt == "Line one.\n\nLine two."


def test_agent_naming_a_missing_bottle(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "dev", MINIMAL_BOTTLE)
    path = write(home / "agents", "a", "description: x\nbottle: deb")
    with pytest.raises(ManifestError) as e:
        manifest.agent("a")
    assert (e.value.file, e.value.line) == (path, 3)
    assert "bottle 'deb' does not exist (available: dev)" in str(e.value)


def test_resources_overlay_per_container_and_field(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(
        home / "bottles", "base", MINIMAL_BOTTLE + "\nresources: {agent: {memory: 8g, pids: 100}}"
    )
    write(home / "bottles", "child", "extends: base\nresources: {agent: {pids: 200}}")
    r = manifest.bottle("child").bottle.resources
    assert (r.agent.memory, r.agent.pids, r.agent.cpus) == ("8g", 200, 2.0)
    assert r.bundle.memory == "1g"


def test_a_bottle_overrides_the_default_limits_per_field(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(
        home / "bottles", "base", MINIMAL_BOTTLE + "\nresources: {agent: {memory: 8g, cpus: null}}"
    )
    r = manifest.bottle("base").bottle.resources
    # null lifts a limit; the fields not named keep their defaults.
    assert (r.agent.memory, r.agent.pids, r.agent.cpus) == ("8g", 4096, None)
    assert r.bundle.memory == "1g" and r.relay.pids == 64
