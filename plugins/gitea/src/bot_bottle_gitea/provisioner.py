"""Gitea (and Forgejo, which keeps Gitea's API) deploy keys.

``POST /api/v1/repos/{owner}/{repo}/keys`` with ``{title, key, read_only}``
creates the key (201, ``DeployKey`` with its ``id``);
``DELETE /api/v1/repos/{owner}/{repo}/keys/{id}`` revokes it (204);
``GET /api/v1/repos/{owner}/{repo}/keys?page=&limit=`` lists them. The token
goes in ``Authorization: token <value>`` (Gitea's ``AuthorizationHeaderToken``).
"""

from __future__ import annotations

from typing import ClassVar

from bot_bottle.contracts.keys import KeyRequest
from bot_bottle.forge_kit import RestDeployKeys, repo_segments
from bot_bottle.secrets import Secret


class GiteaKeys(RestDeployKeys):
    name = "gitea"
    description = "a Gitea/Forgejo deploy key per bottle, revoked at teardown"
    forge: ClassVar[str] = "Gitea"
    scope: ClassVar[str] = (
        "the 'write:repository' scope and admin rights on the repository (Forgejo: the same scope)"
    )

    def auth_headers(self, token: Secret) -> dict[str, str]:
        return {"Authorization": f"token {token.reveal()}"}

    def keys_path(self, request: KeyRequest) -> str:
        owner, repo = repo_segments(request)
        return f"/api/v1/repos/{owner}/{repo}/keys"

    def list_params(self, page: int) -> dict[str, str]:
        return {"page": str(page), "limit": "50"}
