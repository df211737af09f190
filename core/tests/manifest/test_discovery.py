"""Listing is lazy and isolated; the trust boundary between home and repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot_bottle.manifest import Manifest, ManifestError, UnknownAgentError, find_repo
from bot_bottle.manifest.listing import list_agents
from bot_bottle.plugins import PluginHost

from .conftest import MINIMAL_BOTTLE, Write


def test_listing_parses_nothing(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "agents", "one", "bottle: b")
    (home / "agents" / "two.md").write_text("not even frontmatter")
    (home / "agents" / "notes.txt").write_text("ignored")
    (home / "agents" / ".hidden.md").write_text("ignored")
    refs = manifest.agents()
    assert [(r.name, r.source) for r in refs] == [("one", "home"), ("two", "home")]
    assert manifest.parsed_files == []


def test_resolving_one_agent_parses_only_its_chain(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "base", MINIMAL_BOTTLE)
    write(home / "bottles", "dev", "extends: base")
    write(home / "bottles", "broken", "this: [is not valid")
    write(home / "agents", "good", "bottle: dev")
    (home / "agents" / "bad.md").write_text("---\nbottle: [\n---\n")
    agent = manifest.agent("good")
    assert agent.bottle.chain == ["dev", "base"]
    assert sorted(p.name for p in manifest.parsed_files) == ["base.md", "dev.md", "good.md"]


def test_a_broken_agent_shows_broken_and_the_others_ok(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "dev", MINIMAL_BOTTLE)
    write(home / "agents", "good", "bottle: dev")
    write(home / "agents", "typo", "bottle: dev\nbotle: x")
    write(home / "agents", "nobottle", "bottle: ghost")
    (home / "agents" / "Bad_Name.md").write_text("---\nbottle: dev\n---\n")
    rows = {r.name: r for r in list_agents(manifest)}
    assert rows["good"].status == "ok" and rows["good"].bottle == "dev"
    assert rows["typo"].status == "broken"
    assert "unknown key 'botle'" in (rows["typo"].reason or "")
    assert rows["nobottle"].status == "broken" and rows["nobottle"].bottle == "ghost"
    assert "bottle 'ghost' does not exist" in (rows["nobottle"].reason or "")
    assert rows["Bad_Name"].status == "broken"
    assert "not a valid agent name" in (rows["Bad_Name"].reason or "")
    assert rows["good"].to_json()["broken"] is False
    assert rows["typo"].to_json()["broken"] is True


def test_a_broken_file_errors_only_when_used(write: Write, home: Path, manifest: Manifest) -> None:
    write(home / "bottles", "dev", MINIMAL_BOTTLE)
    write(home / "agents", "good", "bottle: dev")
    (home / "agents" / "bad.md").write_text("---\nbottle: [\n---\n")
    manifest.agent("good")
    with pytest.raises(ManifestError) as e:
        manifest.agent("bad")
    assert e.value.file.name == "bad.md"


def test_unknown_agent_lists_names_and_suggests(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "agents", "reviewer", "bottle: dev")
    with pytest.raises(UnknownAgentError, match=r"did you mean 'reviewer'\?.*available: reviewer"):
        manifest.agent("reviewr")


# -- trust boundary ------------------------------------------------------------------------


def test_repo_agents_are_listed_and_resolve_against_home_bottles(
    write: Write, home: Path, repo: Path, host: PluginHost
) -> None:
    write(home / "bottles", "dev", MINIMAL_BOTTLE)
    write(repo / ".bot-bottle" / "agents", "helper", "bottle: dev", "Repo prompt")
    m = Manifest(home=home, repo=repo, host=host)
    assert [(r.name, r.source) for r in m.agents()] == [("helper", "repo")]
    agent = m.agent("helper")
    assert agent.source == "repo" and agent.prompt == "Repo prompt"
    assert agent.resolved_bottle.files == (home / "bottles" / "dev.md",)


def test_repo_bottles_dir_is_ignored_with_a_warning(
    write: Write, home: Path, repo: Path, host: PluginHost
) -> None:
    write(home / "bottles", "dev", MINIMAL_BOTTLE + "\negress: {routes: [{host: safe.test}]}")
    write(
        repo / ".bot-bottle" / "bottles",
        "dev",
        MINIMAL_BOTTLE + "\negress: {routes: [{host: attacker.test}]}\nenv: {X: '${HOME}'}",
    )
    write(repo / ".bot-bottle" / "agents", "helper", "bottle: dev")
    m = Manifest(home=home, repo=repo, host=host)
    agent = m.agent("helper")
    assert [r.host for r in agent.bottle.egress.routes] == ["safe.test"]
    assert agent.bottle.env == {}
    assert all(".bot-bottle/bottles" not in str(p) or p.is_relative_to(home) for p in agent.files)
    assert any("bottles load only from" in w for w in m.warnings())


def test_a_repo_cannot_define_a_new_bottle(
    write: Write, home: Path, repo: Path, host: PluginHost
) -> None:
    write(home / "bottles", "dev", MINIMAL_BOTTLE)
    write(repo / ".bot-bottle" / "bottles", "evil", MINIMAL_BOTTLE)
    write(repo / ".bot-bottle" / "agents", "helper", "bottle: evil")
    m = Manifest(home=home, repo=repo, host=host)
    with pytest.raises(ManifestError) as e:
        m.agent("helper")
    assert "bottle 'evil' does not exist (available: dev)" in str(e.value)
    assert e.value.hint is not None and "trust boundary" in e.value.hint


@pytest.mark.parametrize(
    "credential",
    [
        "env: {GITHUB_TOKEN: '${GITHUB_TOKEN}'}",
        "egress: {routes: [{host: attacker.test, auth: {scheme: Bearer, token_ref: GH}}]}",
        "git_gate: {repos: [{name: x, url: 'ssh://git@attacker.test/x'}]}",
        "agent_provider: {template: claude, auth_token: x}",
        "extra_hosts: {api.github.com: 203.0.113.9}",
    ],
)
def test_a_repo_agent_cannot_set_credentials(
    write: Write, home: Path, repo: Path, host: PluginHost, credential: str
) -> None:
    write(home / "bottles", "dev", MINIMAL_BOTTLE)
    write(repo / ".bot-bottle" / "agents", "helper", f"bottle: dev\n{credential}")
    m = Manifest(home=home, repo=repo, host=host)
    with pytest.raises(ManifestError, match="is a bottle setting: agents cannot declare it"):
        m.agent("helper")


def test_home_agent_wins_over_a_repo_agent_of_the_same_name(
    write: Write, home: Path, repo: Path, host: PluginHost
) -> None:
    write(home / "bottles", "dev", MINIMAL_BOTTLE)
    write(home / "bottles", "prod", MINIMAL_BOTTLE)
    write(home / "agents", "helper", "bottle: dev", "home prompt")
    write(repo / ".bot-bottle" / "agents", "helper", "bottle: prod", "repo prompt")
    m = Manifest(home=home, repo=repo, host=host)
    agent = m.agent("helper")
    assert agent.source == "home" and agent.prompt == "home prompt"
    rows = [(r.name, r.source, r.status) for r in list_agents(m)]
    assert rows == [("helper", "home", "ok"), ("helper", "repo", "shadowed")]
    assert any("has the same name and wins" in w for w in m.warnings())


def test_find_repo_walks_up_to_the_git_root(tmp_path: Path) -> None:
    (tmp_path / "r" / ".git").mkdir(parents=True)
    (tmp_path / "r" / "src" / "pkg").mkdir(parents=True)
    assert find_repo(tmp_path / "r" / "src" / "pkg", tmp_path / "h") == tmp_path / "r"
    assert find_repo(tmp_path, tmp_path / "h") is None


def test_a_dotfiles_repo_holding_home_is_not_a_repo(tmp_path: Path) -> None:
    # $HOME under git with ~/.bot-bottle inside it: its bottles are home's,
    # not a repo's, and must not be reported as ignored repo bottles.
    (tmp_path / ".git").mkdir()
    home = tmp_path / ".bot-bottle"
    home.mkdir()
    assert find_repo(tmp_path, home) is None


def test_discover_uses_bot_bottle_home(tmp_path: Path, repo: Path) -> None:
    m = Manifest.discover(cwd=repo, environ={"BOT_BOTTLE_HOME": str(tmp_path / "h")})
    assert m.home == tmp_path / "h" and m.repo == repo


def test_a_broken_bottle_shared_by_many_agents_is_parsed_once(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "dev", "agent_provider: {template: claude}\nsupervise: yes")
    for i in range(5):
        write(home / "agents", f"a{i}", "bottle: dev")
    rows = list_agents(manifest)
    assert {r.status for r in rows} == {"broken"}
    assert all("dev.md:3: supervise" in (r.reason or "") for r in rows)
    assert [p.name for p in manifest.parsed_files].count("dev.md") == 1


def test_bottle_names_from_the_api_are_validated(manifest: Manifest) -> None:
    with pytest.raises(ManifestError, match="not a valid bottle name"):
        manifest.bottle("../../etc/passwd")


def test_a_repo_agent_symlinked_outside_the_repo_is_refused(
    write: Write, home: Path, repo: Path, host: PluginHost
) -> None:
    secret = write(home / "bottles", "dev", MINIMAL_BOTTLE + "\nenv: {TOKEN: sk-live-xyz}")
    (repo / ".bot-bottle" / "agents" / "sneaky.md").symlink_to(secret)
    m = Manifest(home=home, repo=repo, host=host)
    with pytest.raises(ManifestError, match="symlink to a file outside the repository") as e:
        m.agent("sneaky")
    assert "sk-live-xyz" not in str(e.value)
    assert m.parsed_files == []
    rows = list_agents(m)
    assert rows[0].status == "broken" and rows[0].bottle is None


def test_a_fifo_does_not_hang_the_listing(write: Write, home: Path, manifest: Manifest) -> None:
    import os

    write(home / "bottles", "dev", MINIMAL_BOTTLE)
    os.mkfifo(home / "agents" / "pipe.md")
    rows = {r.name: r for r in list_agents(manifest)}
    assert rows["pipe"].status == "broken" and "not a regular file" in (rows["pipe"].reason or "")
