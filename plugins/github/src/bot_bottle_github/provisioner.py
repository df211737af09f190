"""GitHub (and GitHub Enterprise Server) deploy keys.

``POST /repos/{owner}/{repo}/keys`` with ``{title, key, read_only}`` creates
the key (201, ``deploy-key`` with its ``id``);
``DELETE /repos/{owner}/{repo}/keys/{key_id}`` revokes it (204);
``GET /repos/{owner}/{repo}/keys?per_page=&page=`` lists them. ``base_url``
is ``https://api.github.com`` or, on Enterprise Server,
``https://HOST/api/v3``.
"""

from __future__ import annotations

from typing import ClassVar

from bot_bottle.contracts.keys import KeyRequest
from bot_bottle.forge_kit import RestDeployKeys, repo_segments
from bot_bottle.secrets import Secret


class GitHubKeys(RestDeployKeys):
    name = "github"
    description = "a GitHub deploy key per bottle, revoked at teardown"
    forge: ClassVar[str] = "GitHub"
    scope: ClassVar[str] = (
        "a fine-grained token with the repository permission 'Administration: read and "
        "write', or a classic token with the 'repo' scope"
    )

    def auth_headers(self, token: Secret) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token.reveal()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def keys_path(self, request: KeyRequest) -> str:
        owner, repo = repo_segments(request)
        return f"/repos/{owner}/{repo}/keys"
