"""GitLab (gitlab.com and self-managed) deploy keys.

``POST /api/v4/projects/:id/deploy_keys`` with ``{title, key, can_push}``
creates the key (201, ``DeployKeysProject`` with its ``id``);
``DELETE /api/v4/projects/:id/deploy_keys/:key_id`` revokes it (204);
``GET /api/v4/projects/:id/deploy_keys?page=&per_page=`` lists them. ``:id``
is the project's URL-encoded full path (``group/subgroup/project``), taken
from the git-gate url. The token goes in the ``PRIVATE-TOKEN`` header.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from bot_bottle.contracts.keys import KeyRequest
from bot_bottle.forge_kit import ForgeError, RestDeployKeys, forge_options
from bot_bottle.secrets import Secret


def project_path(path: str) -> str:
    """``group/sub/project`` from a git-gate url path (subgroups kept)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 2:
        raise ForgeError(
            f"cannot tell the GitLab project from the git-gate url path {path!r}",
            hint="the url must end in /GROUP/PROJECT(.git)",
            maybe_created=False,
        )
    parts[-1] = parts[-1].removesuffix(".git")
    return "/".join(parts)


class GitLabKeys(RestDeployKeys):
    name = "gitlab"
    description = "a GitLab deploy key per bottle, revoked at teardown"
    forge: ClassVar[str] = "GitLab"
    scope: ClassVar[str] = (
        "the 'api' scope, from a user (or project/group access token) with the Maintainer "
        "role on the project"
    )

    def auth_headers(self, token: Secret) -> dict[str, str]:
        return {"PRIVATE-TOKEN": token.reveal()}

    def keys_path(self, request: KeyRequest) -> str:
        return f"/api/v4/projects/{quote(project_path(request.path), safe='')}/deploy_keys"

    def create_body(self, request: KeyRequest, public_key: str) -> dict[str, Any]:
        opts = forge_options(request)
        return {"title": request.title, "key": public_key, "can_push": not opts.read_only}

    def repo_label(self, request: KeyRequest) -> str:
        return project_path(request.path)
