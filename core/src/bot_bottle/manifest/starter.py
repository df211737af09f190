"""The commented example files ``bot-bottle init`` writes into ``~/.bot-bottle/``.

Kept as strings in the package (examples/ is not installed with the wheel).
Tests load them like any manifest, so they stay valid.
"""

from __future__ import annotations

BOTTLE_BASE = """\
---
# A bottle is where an agent runs: its provider, environment, git remotes
# and the only hosts it may reach. Bottles live only in ~/.bot-bottle/bottles/
# (a repository may ship agents, never bottles). The file name is the name.
#
# Validate your edits with:  bot-bottle validate
# Editor completion:         bot-bottle schema bottle > bottle.schema.json

agent_provider:
  template: claude        # an installed agent provider ('bot-bottle plugins list');
                          # its own options go next to 'template'
  # auth_token: CLAUDE_CODE_OAUTH_TOKEN
  #                       # the host variable holding a token from 'claude setup-token':
  #                       # egress injects it; the agent only sees a placeholder
# For Codex instead (after 'codex login' on this machine):
# agent_provider:
#   template: codex
#   forward_host_credentials: true

# Environment the agent sees. Three forms:
#   NAME: literal             a fixed value
#   NAME: ?prompt             asked when the bottle starts, not echoed
#   NAME: ${HOST_VARIABLE}    copied from your shell ($$ is a literal $)
env:
  LOG_LEVEL: info

# Identity for commits made in the bottle (an agent may override per field).
# git_user:
#   name: Your Name (agent)
#   email: you+agent@example.com

# supervise: true         # the approval channel the agent can call (default true)

egress:
  log: blocks             # off | blocks | full
  routes:                 # deny by default: only these hosts are reachable
    - host: pypi.org
      matches:            # optional: restrict paths / methods / headers
        - methods: [GET]
    - host: files.pythonhosted.org
---
Base bottle: the Markdown body of a bottle is notes for people.
"""

BOTTLE_DEV = """\
---
# A task bottle that builds on 'base'. With 'extends':
#   env merges (this file wins), git_user overlays per field,
#   git_gate repos merge by name field by field, other keys replace the parent's.
extends: base

env:
  GITEA_TOKEN: ${GITEA_TOKEN}

# Pushes leave only through the git gate, after a secret scan.
# git_gate:
#   repos:
#     - name: myproject
#       url: ssh://git@git.example.com:22/me/myproject.git
#       host_key: ssh-ed25519 AAAA...   # 'ssh-keyscan -t ed25519 git.example.com'
#       key:
#         provider: static
#         path: ~/.ssh/myproject_deploy_key
#       # or a deploy key made for this bottle and revoked after it
#       # (gitea/forgejo, github, gitlab):
#       # key: {provider: gitea, base_url: https://git.example.com, token_ref: GITEA_TOKEN}

egress:
  routes:
    - host: pypi.org
    - host: files.pythonhosted.org
    # - host: git.example.com
    #   auth:
    #     scheme: token            # Bearer | token
    #     token_ref: GITEA_TOKEN   # a host variable: the agent never sees it
    #   matches:
    #     - paths:
    #         - {type: prefix, value: /api/v1/repos/me/}
    #   dlp:
    #     outbound_detectors: [token_patterns]   # or false; omit for all
    #   git:
    #     fetch: true              # clone/fetch over HTTPS; push never

# Pin host names for the sidecars (hosts only your private network resolves).
# extra_hosts:
#   git.example.com: 10.0.0.5
---
Development bottle.
"""

AGENT_ASSISTANT = """\
---
# An agent: which bottle it runs in, plus its system prompt (the body below).
# Agents live in ~/.bot-bottle/agents/ or in a repository's .bot-bottle/agents/.
# They cannot declare env, egress or remotes: those belong to bottles.
bottle: base
# skills: [my-skill]        # directories under ~/.claude/skills/
# git_user:
#   name: Assistant Bot     # overrides the bottle's name, keeps its email
#
# Claude Code sub-agent fields (name, description, model, color, memory,
# tools) are accepted and ignored, so this file can live in ~/.claude/agents/ too.
description: A general-purpose coding assistant.
---
You are a careful coding assistant. Explain what you change and why.
"""

BOTTLE_DEMO = """\
---
# The demo bottle: the credential-free 'shell' provider (bash, curl, git,
# dig). Nothing leaves it but requests egress allows; try
#   bot-bottle run demo -- curl -s http://_egress.local/routes   (answered by egress)
#   bot-bottle run demo -- curl -s https://not-on-the-allowlist.test/  (refused: not a route)
agent_provider:
  template: shell

egress:
  log: blocks
  routes:
    - host: pypi.org
      matches:
        - methods: [GET]
---
Demo bottle: a shell with no credentials.
"""

AGENT_DEMO = """\
---
bottle: demo
description: A shell in the demo bottle.
---
A shell for trying bot-bottle.
"""

FILES: dict[str, str] = {
    "bottles/demo.md": BOTTLE_DEMO,
    "agents/demo.md": AGENT_DEMO,
    "bottles/base.md": BOTTLE_BASE,
    "bottles/dev.md": BOTTLE_DEV,
    "agents/assistant.md": AGENT_ASSISTANT,
}
