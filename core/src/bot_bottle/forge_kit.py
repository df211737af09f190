"""Shared parts of deploy-key provisioners that talk to a forge's REST API
(``bot-bottle-gitea``, ``bot-bottle-github``, ...): options, the key pair,
the token, one HTTP call with a timeout, and errors a user can act on.

The HTTP client (``httpx2``) is imported only when a call is made; a plugin
using this kit depends on it. The API token is read from the host variable
the manifest names (``token_ref``), held as a
:class:`~bot_bottle.secrets.Secret`, sent only in the auth header, and never
put in a message or a log: any text the forge sends back is scrubbed of it
before it is shown.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot_bottle.contracts.keys import KeyProvisioner, KeyRequest, ProvisionedKey
from bot_bottle.errors import BotBottleError, KeyRevocationError
from bot_bottle.secrets import Secret
from bot_bottle.termtext import visible

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TITLE_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,40}$")


class ForgeError(BotBottleError):
    """A forge call failed. ``maybe_created`` is False when the forge
    certainly made nothing (it refused the request, or was never reached)."""

    def __init__(self, message: str, *, hint: str | None = None, maybe_created: bool) -> None:
        super().__init__(message, hint=hint)
        self.maybe_created = maybe_created


class ForgeKeyOptions(BaseModel):
    """The options every forge provisioner takes next to ``provider:``."""

    model_config = ConfigDict(extra="forbid")

    #: The forge's base URL (https only: the token travels in a header).
    base_url: str
    #: Name of the host environment variable holding the API token.
    token_ref: str
    #: Register a read-only key (pushes through git-gate then fail upstream).
    read_only: bool = False
    #: Start of the key's title (default ``bot-bottle``); the title is
    #: ``<prefix>:<bottle slug>:<repo name>``.
    title_prefix: str | None = None
    #: A PEM CA bundle that replaces the system trust store for this forge
    #: (a self-hosted forge with a private CA).
    ca_file: str | None = None
    #: Seconds for each API call (connect and read).
    timeout: float = Field(default=15.0, gt=0, le=120)

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL (the API token is sent to it)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must be a plain https://host[:port][/path] URL")
        return value.rstrip("/")

    @field_validator("token_ref")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError("must be the NAME of a host environment variable, not a token")
        return value

    @field_validator("ca_file")
    @classmethod
    def _expand(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser()) if value else value

    @field_validator("title_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and not _TITLE_PREFIX.match(value):
            raise ValueError("use 1-40 letters, digits, '.', '_' or '-'")
        return value


def generate_keypair(comment: str) -> tuple[str, Secret]:
    """A fresh ed25519 key pair, in memory: ``(public OpenSSH line, private
    key in OpenSSH PEM as a Secret)``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{public.decode()} {comment}", Secret(private)


def read_token(ref: str, environ: Mapping[str, str] | None = None) -> Secret:
    value = (environ if environ is not None else os.environ).get(ref, "")
    if not value.strip():
        raise ForgeError(
            f"the forge API token variable ${ref} is not set",
            hint=f"export {ref}=<an API token> (the manifest's key.token_ref names it)",
            maybe_created=False,
        )
    return Secret(value.strip())


def owner_and_repo(path: str) -> tuple[str, str]:
    """``owner``, ``repo`` from a git-gate url's path (``/owner/repo.git``):
    its last two segments."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 2:
        raise ForgeError(
            f"cannot tell the forge repository from the git-gate url path {path!r}",
            hint="the url must end in /OWNER/REPO(.git)",
            maybe_created=False,
        )
    repo = parts[-1].removesuffix(".git")
    return parts[-2], repo


@dataclass(frozen=True)
class ForgeContext:
    """What a provisioner's API call needs from the request."""

    forge: str  # "Gitea", "GitHub", ... for messages
    base_url: str
    token_ref: str
    token: Secret
    timeout: float
    ca_file: str | None
    #: The token permission the deploy-key calls need, named as the forge names it.
    scope: str
    #: owner/repo as shown in messages.
    repo: str


class RestDeployKeys(KeyProvisioner):
    """A provisioner over a forge's REST deploy-key endpoints. Subclasses say
    where the endpoints are and how the token is sent."""

    options_model: ClassVar[type[BaseModel]] = ForgeKeyOptions
    forge: ClassVar[str]
    scope: ClassVar[str]

    # -- what differs per forge ----------------------------------------------------

    def auth_headers(self, token: Secret) -> dict[str, str]:
        raise NotImplementedError

    def keys_path(self, request: KeyRequest) -> str:
        """Path (under ``base_url``) of the repository's deploy-key collection."""
        raise NotImplementedError

    def create_body(self, request: KeyRequest, public_key: str) -> dict[str, Any]:
        opts = forge_options(request)
        return {"title": request.title, "key": public_key, "read_only": opts.read_only}

    def list_params(self, page: int) -> dict[str, str]:
        return {"page": str(page), "per_page": "100"}

    def repo_label(self, request: KeyRequest) -> str:
        """The repository as messages name it."""
        owner, repo = owner_and_repo(request.path)
        return f"{owner}/{repo}"

    # -- the contract --------------------------------------------------------------

    def create(self, request: KeyRequest) -> ProvisionedKey:
        ctx = self.context(request)
        public, private = generate_keypair(request.title)
        body = call(
            ctx,
            "POST",
            self.keys_path(request),
            headers=self.auth_headers(ctx.token),
            json=self.create_body(request, public),
            action="create a deploy key",
            expect=(201,),
        )
        key_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(key_id, int | str) or isinstance(key_id, bool) or str(key_id) == "":
            raise ForgeError(
                f"{ctx.forge} at {ctx.base_url} answered without a key id",
                hint="is base_url the forge's API address?",
                maybe_created=True,
            )
        request.on_created(str(key_id))
        return ProvisionedKey(self.name, str(key_id), public, private)

    def revoke(self, request: KeyRequest, key_id: str) -> None:
        try:
            ctx = self.context(request)
            call(
                ctx,
                "DELETE",
                f"{self.keys_path(request)}/{quote(key_id, safe='')}",
                headers=self.auth_headers(ctx.token),
                action=f"delete deploy key {key_id}",
                expect=(204, 200),
                missing_ok=True,
            )
        except ForgeError as exc:
            raise KeyRevocationError(exc.message, hint=exc.hint) from None

    def find_keys(self, request: KeyRequest) -> list[str]:
        ctx = self.context(request)
        found: list[str] = []
        for page in range(1, 51):  # bounded: 50 pages of 100 keys
            body = call(
                ctx,
                "GET",
                self.keys_path(request),
                headers=self.auth_headers(ctx.token),
                params=self.list_params(page),
                action="list deploy keys",
                expect=(200,),
            )
            if not isinstance(body, list) or not body:
                break
            found += [
                str(k["id"])
                for k in body
                if isinstance(k, dict) and k.get("title") == request.title and "id" in k
            ]
        return found

    def context(self, request: KeyRequest) -> ForgeContext:
        opts = forge_options(request)
        return ForgeContext(
            forge=self.forge,
            base_url=opts.base_url,
            token_ref=opts.token_ref,
            token=read_token(opts.token_ref),
            timeout=opts.timeout,
            ca_file=opts.ca_file,
            scope=self.scope,
            repo=self.repo_label(request),
        )


def forge_options(request: KeyRequest) -> ForgeKeyOptions:
    opts = request.options
    if not isinstance(opts, ForgeKeyOptions):
        raise BotBottleError("forge provisioners need their own validated options")
    return opts


def repo_segments(request: KeyRequest) -> tuple[str, str]:
    owner, repo = owner_and_repo(request.path)
    return quote(owner, safe=""), quote(repo, safe="")


def call(
    ctx: ForgeContext,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str],
    action: str,
    expect: tuple[int, ...],
    json: Any = None,
    params: Mapping[str, str] | None = None,
    missing_ok: bool = False,
) -> Any:
    """One API call; returns the decoded JSON body (None when empty). Every
    failure is a :class:`ForgeError` with an ``error:``/``hint:`` pair."""
    import httpx2

    where = f"{ctx.forge} at {ctx.base_url}"
    try:
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ctx.ca_file) if ctx.ca_file else True
        )
    except (OSError, ssl.SSLError) as exc:
        raise ForgeError(
            f"cannot load ca_file {ctx.ca_file}: {exc.strerror or exc}",
            hint="ca_file must name a PEM CA bundle readable by you",
            maybe_created=False,
        ) from None
    try:
        with httpx2.Client(
            timeout=httpx2.Timeout(ctx.timeout), verify=verify, follow_redirects=False
        ) as client:
            response = client.request(
                method,
                ctx.base_url + path,
                headers={"Accept": "application/json", **headers},
                json=json,
                params=params,
            )
    except httpx2.TimeoutException:
        raise ForgeError(
            f"{where} did not answer within {ctx.timeout:g}s (trying to {action})",
            hint="check base_url and that the forge is reachable from this machine; "
            "raise the key's 'timeout' option for a slow forge",
            maybe_created=method == "POST",
        ) from None
    except httpx2.HTTPError as exc:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc.__cause__, ssl.SSLError):
            raise ForgeError(
                f"TLS to {where} failed: the certificate is not trusted "
                f"({_scrub(text, ctx.token)})",
                hint="for a forge with a private CA set the key's 'ca_file' option to that "
                "CA's PEM bundle; check that base_url names the forge's own host",
                maybe_created=False,
            ) from None
        raise ForgeError(
            f"cannot reach {where} (trying to {action}): {_scrub(text, ctx.token)}",
            hint="check base_url, DNS and that the forge is up",
            maybe_created=False,
        ) from None
    status = response.status_code
    if status in expect or (missing_ok and status == 404):
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ForgeError(
                f"{where} answered {status} with a body that is not JSON",
                hint="is base_url the forge's API address (see the provisioner's README)?",
                maybe_created=method == "POST",
            ) from None
    detail = _forge_message(response, ctx.token)
    suffix = f": {detail}" if detail else ""
    if status == 401:
        raise ForgeError(
            f"{where} rejected the token in ${ctx.token_ref} (401){suffix}",
            hint=f"the token is wrong or expired; create one with {ctx.scope}",
            maybe_created=False,
        )
    if status == 403:
        raise ForgeError(
            f"the token in ${ctx.token_ref} may not {action} on {ctx.repo} (403){suffix}",
            hint=f"the token needs {ctx.scope}",
            maybe_created=False,
        )
    if status == 404:
        raise ForgeError(
            f"{where} has no repository {ctx.repo} (404)",
            hint="owner/repo come from the last two parts of the git-gate url's path: check "
            f"it, and that the token in ${ctx.token_ref} can see the repository",
            maybe_created=False,
        )
    if status in (400, 422):
        raise ForgeError(
            f"{where} refused the key for {ctx.repo} ({status}){suffix}",
            hint="a deploy key with the same title or content already exists: delete the "
            "stale one (or run 'bot-bottle cleanup')",
            maybe_created=False,
        )
    raise ForgeError(
        f"{where} answered {status} (trying to {action} on {ctx.repo}){suffix}",
        hint="the forge failed; try again later",
        maybe_created=method == "POST" and status >= 500,
    )


def _forge_message(response: Any, token: Secret) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    msg = body.get("message") if isinstance(body, dict) else None
    if isinstance(msg, dict):  # GitLab: {"field": ["has already been taken"]}
        msg = "; ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}"
                        for k, v in msg.items())  # fmt: skip
    if isinstance(msg, list):
        msg = "; ".join(str(m) for m in msg)
    return _scrub(str(msg), token) if msg else ""


def _scrub(text: str, token: Secret) -> str:
    value = token.reveal()
    if value:
        text = text.replace(value, "***")
    return visible(text, limit=200)
