"""The token rules: all of them, as data, in this one file.

To add a rule, append a :class:`Rule` with at least one true-positive and
one false-positive fixture; ``tests/test_rules.py`` fails if a true positive
is missed or a false positive blocks, for every rule.

Patterns are RE2 syntax over bytes (no look-around, no back-references),
because all rules are compiled into one alternation and matched in a single
linear pass. Use only non-capturing groups, except an optional
``(?P<secret>...)`` naming the part that is the secret (it is what the
entropy gate measures and what the snippet redacts; default: the whole
match). Where two rules can match at the same place, the earlier one wins.

``min_entropy`` (bits per character of the secret) is the gate for loose
formats; ``check`` is a validator (checksum, structure). When ``check``
fails the match is reported with ``check_failed`` (``warn`` by default, or
``None`` to drop it): a token that fails its checksum cannot be a live token,
but a mistake in a checksum routine must not turn into a silent miss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot_bottle.contracts.dlp import Action
from bot_bottle_dlp import checks


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    pattern: bytes
    tp: tuple[str, ...]
    fp: tuple[str, ...]
    min_entropy: float = 0.0
    check: Callable[[bytes], bool] | None = None
    check_failed: Action | None = Action.WARN
    action: Action = Action.BLOCK


RULES: tuple[Rule, ...] = (
    Rule(
        "aws-access-key-id",
        "AWS access key ID",
        rb"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        tp=("aws_access_key_id = AKIAC2GKUKXJ54644TYI", "ASIAB7LSPO5FFJE6JRRG"),
        fp=(
            "AKIAIOSFODNN7EXAMPLE",  # the key in AWS's own documentation
            "AKIAAAAAAAAAAAAAAAAA",
            "XAKIAC2GKUKXJ54644TYI",  # part of a longer word
        ),
        min_entropy=3.0,
        check=checks.not_aws_example,
        check_failed=None,
    ),
    Rule(
        "aws-secret-access-key",
        "AWS secret access key next to its name",
        rb"(?i:aws_?secret_?access_?key|aws_?secret)[\"']?\s*[:=]\s*[\"']?"
        rb"(?P<secret>[A-Za-z0-9/+]{40})\b",
        tp=("aws_secret_access_key = DU5NP3cxmBDrftqski67vQKTuashe4c2J239CJiZ",),
        fp=(
            "aws_secret_access_key = xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "DU5NP3cxmBDrftqski67vQKTuashe4c2J239CJiZ",  # no name: too loose alone
        ),
        min_entropy=4.0,
    ),
    Rule(
        "github-pat",
        "GitHub personal access token (classic)",
        rb"\bghp_[A-Za-z0-9]{36}\b",
        tp=("token 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",),
        fp=(
            "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "ghp_cLq0tI1jkszp88r7fYkDc96kVncLVP41QdEX",  # checksum fails: warn only
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",  # GitHub docs' example
        ),
        min_entropy=3.0,
        check=checks.github_token,
    ),
    Rule(
        "github-fine-grained-pat",
        "GitHub fine-grained personal access token",
        rb"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b",
        tp=(
            "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",
        ),
        fp=(
            "github_pat_" + "A" * 22 + "_" + "b" * 59,
            "github_pat_<your-token-here>",
        ),
        min_entropy=3.5,
    ),
    Rule(
        "github-oauth-token",
        "GitHub OAuth access token",
        rb"\bgho_[A-Za-z0-9]{36}\b",
        tp=("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",),
        fp=("gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_" + "0" * 36),
        min_entropy=3.0,
        check=checks.github_token,
    ),
    Rule(
        "github-app-token",
        "GitHub App user-to-server or installation (server-to-server) token",
        rb"\bgh[us]_[A-Za-z0-9]{36}\b",
        tp=("ghu_ky8q06jrTAGiDO5psXGHgQT4Rrg3iu2ZCEBf", "ghs_RfFkKfeb3Q1MSc0sorvCNqpafMuhXX2YixmO"),
        fp=("ghs_" + "ab" * 18, "ghu_shortone"),
        min_entropy=3.0,
        check=checks.github_token,
    ),
    Rule(
        "github-refresh-token",
        "GitHub refresh token",
        rb"\bghr_(?:[A-Za-z0-9]{76}|[A-Za-z0-9]{36})\b",
        tp=("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",),
        fp=("ghr_" + "Z" * 36, "ghr_example"),
        min_entropy=3.0,
        check=checks.github_token,
    ),
    Rule(
        "gitlab-pat",
        "GitLab personal, project or group access token",
        rb"\bglpat-[A-Za-z0-9_\-]{20,}(?:\.[A-Za-z0-9_\-.]+)?",
        tp=("PRIVATE-TOKEN: glpat-ZYsSJoj8E27-8wdGmYdi",),
        fp=("glpat-xxxxxxxxxxxxxxxxxxxx", "glpat-short"),
        min_entropy=3.0,
    ),
    Rule(
        "gitlab-token",
        "GitLab deploy, runner, trigger, feed, OAuth or other prefixed token",
        rb"\b(?:gldt|glrt|glptt|glft|glsoat|glcbt|glimt|glagent|gloas|glffct)-"
        rb"[A-Za-z0-9_\-]{20,}|\bGR1348941[A-Za-z0-9_\-]{20}\b",
        tp=("glrt-EXlk4e2gLyRenI50Fq2v", "gldt-XhP8uQJovskSlWcFA4tK"),
        fp=("gldt-aaaaaaaaaaaaaaaaaaaa", "glrt-token"),
        min_entropy=3.0,
    ),
    Rule(
        "slack-bot-token",
        "Slack bot token",
        rb"\bxoxb-[0-9]{10,13}-[0-9]{10,13}[A-Za-z0-9\-]*",
        tp=("xoxb-392415134150-2228214519721-hSemvsmESL29vLRBirAEII8o",),
        fp=("xoxb-xxxxxxxxxx-xxxxxxxxxxxx", "xoxb-123"),
        min_entropy=3.0,
    ),
    Rule(
        "slack-user-token",
        "Slack user token",
        rb"\bxox[pe](?:-[0-9]{10,13}){3}-[A-Za-z0-9\-]{28,34}",
        tp=("xoxp-408523131384-569909575916-2339808218992-a222e4d40785433bc1cb74c5edef930c",),
        fp=("xoxp-000000000000-000000000000-000000000000-0000000000000000000000000000",),
        min_entropy=2.5,
    ),
    Rule(
        "slack-app-token",
        "Slack app-level token",
        rb"\b(?i:xapp-[0-9]-[A-Z0-9]+-[0-9]+-[a-z0-9]+)",
        tp=(
            "xapp-1-A6GCJKD5GI5-4757330801528-f4bwldujfye3ks3x2v54iic3wcx8tefy7pmlne98rla13ncjaqc1p5u4yotnih60",
        ),
        fp=("xapp-1-AAAA-1-aaaa",),
        min_entropy=3.0,
    ),
    Rule(
        "slack-webhook-url",
        "Slack incoming webhook URL",
        rb"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9+/]{43,56})",
        tp=("https://hooks.slack.com/services/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",),
        fp=(
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "https://api.slack.com/messaging/webhooks",
        ),
        min_entropy=3.0,
    ),
    Rule(
        "openai-api-key",
        "OpenAI API key (project, service account, admin or legacy)",
        rb"\bsk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_\-]{20,}T3BlbkFJ[A-Za-z0-9_\-]{20,}",
        tp=(
            "sk-proj-KTXCgMg72vKQjGB2kjs3Z9CBQQ9WGJaDqIwccZB1AzSKOT1hERoz54Dohcls-QO9kPLnBf15MG"
            "T3BlbkFJaHW6OmydpRvSnib0AFqeVfTMmtI3LI8a1z7oEwShbTYGMKMJQNEyKCp27p8SNOS42AHtcpMtew",
            "OPENAI_API_KEY=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",
        ),
        fp=("sk-xxxxxxxxxxxxxxxxxxxxT3BlbkFJxxxxxxxxxxxxxxxxxxxx",),
        min_entropy=3.5,
    ),
    Rule(
        "openai-project-key",
        "OpenAI project, service-account or admin key without the usual marker",
        rb"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,}",
        tp=("sk-svcacct-Q8vL2nR5tW7yZ0bD3fH6jK9mP1sU4xA7cE0gI3kN6qT9wB2",),
        fp=("sk-proj-" + "x" * 48, "sk-proj-your-key-here"),
        min_entropy=3.5,
    ),
    Rule(
        "anthropic-api-key",
        "Anthropic API or admin key",
        rb"\bsk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_\-]{32,}",
        tp=(
            "x-api-key: sk-ant-api03-ykk5psvyIFKtxIgIRKE4e5Pv1TICrdPukCWgq14tUmT-dnEpfxINuDp0"
            "tTIUkmkuRgOuHINkgfW3UgKYVdjWI9OHs91K3AA",
        ),
        fp=("sk-ant-api03-" + "x" * 95, "sk-ant-api03-..."),
        min_entropy=3.5,
    ),
    Rule(
        "anthropic-oauth-token",
        "Anthropic OAuth access or refresh token (Claude Code's long-lived token)",
        rb"\bsk-ant-(?:oat|ort)[0-9]{2}-[A-Za-z0-9_\-]{32,}",
        tp=(
            "CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01--DMEjbkrX3rsNVYWEAbHANBRfc_uwExNmMflE16R6_FWOme"
            "TpK3B2D2simZA4M53yT5Agte_vx_6m436ujbOhNNbdpFAxAA",
        ),
        fp=("sk-ant-oat01-placeholder", "sk-ant-oat01-" + "0" * 95),
        min_entropy=3.5,
    ),
    Rule(
        "stripe-secret-key",
        "Stripe secret or restricted key",
        rb"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{24,247}\b",
        tp=("sk_live_8cf1m4RpqVMhHZmiwA81IaPABlE9bE8z72", "rk_live_ckocwlcyRUnK1U8LreVtXesL"),
        fp=(
            "pk_live_8cf1m4RpqVMhHZmiwA81IaPABlE9bE8z72",  # publishable: meant to be public
            "sk_test_" + "0" * 24,
        ),
        min_entropy=3.0,
    ),
    Rule(
        "stripe-webhook-secret",
        "Stripe webhook signing secret",
        rb"\bwhsec_[A-Za-z0-9]{32,}\b",
        tp=("whsec_Ad2s5l1KmzOhrXOKJG4208gGHqY3DIBL",),
        fp=("whsec_" + "x" * 32,),
        min_entropy=3.0,
    ),
    Rule(
        "npm-token",
        "npm access token",
        rb"\bnpm_[A-Za-z0-9]{36}\b",
        tp=("//registry.npmjs.org/:_authToken=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",),
        fp=("npm_" + "a" * 36, "npm_install_dependencies_for_the_project"),
        min_entropy=3.0,
        check=checks.npm_token,
    ),
    Rule(
        "pypi-token",
        "PyPI or TestPyPI upload token",
        rb"\bpypi-(?:AgEIcHlwaS5vcmc|AgENdGVzdC5weXBpLm9yZw)[A-Za-z0-9_\-]{50,}",
        tp=(
            "password = pypi-AgEIcHlwaS5vcmcgmXu-6ANyCipmwH8-d5NPE7NWZMna_zYOCN_vU3p_cf0vT0dLT"
            "pFwTmO2DIrNTqxD9tLqQWwXhFPAU5PRTAzmYfOBFpg2MejJHNHb_utZgFBxPQLeO3J0VLT5fQ17cy0s2f86ypbR9Fj",
        ),
        fp=("pypi-AgEIcHlwaS5vcmc", "pypi-token-goes-here"),
        min_entropy=3.0,
    ),
    Rule(
        "google-api-key",
        "Google API key",
        rb"\bAIza[0-9A-Za-z_\-]{35}",
        tp=("key=AIzaiIKcrgf6bAJi4KlEOaGX64gkl5dgqlqcS8x",),
        fp=("AIza" + "x" * 35, "AIzaShort"),
        min_entropy=3.0,
    ),
    Rule(
        "huggingface-token",
        "Hugging Face user or organisation token",
        rb"\b(?:hf_|api_org_)[A-Za-z]{34}\b",
        tp=(
            "HF_TOKEN=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",
            "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",
        ),
        fp=("hf_" + "x" * 34, "hf_hub_download"),
        min_entropy=3.0,
    ),
    Rule(
        "private-key",
        "PEM private key block",
        # The header, optional RFC 1421 headers (Proc-Type, DEK-Info), then 64
        # characters of base64 body: enough to tell a key from a placeholder.
        rb"-----BEGIN[ A-Z0-9_\-]{0,100}PRIVATE KEY(?: BLOCK)?-----(?:\s|\\[rn])+"
        rb"(?:[A-Za-z\-]+: [^\r\n\\]*(?:\s|\\[rn])+){0,4}"
        rb"(?:[A-Za-z0-9+/=]|\s|\\[rn]){64}",
        tp=(
            "-----BEGIN RSA PRIVATE KEY-----\nsCI23vDf3tkjsK6X9KLV7LNLuu4hKAmkR+WgFgFj5xFc4O1xsx2"
            "03KPwb547I8vx\nsCI23vDf3tkjsK6X9KLV7LNLuu4hKAmkR+WgFgFj5xFc4O1xsx203KPwb547I8vx\n"
            "-----END RSA PRIVATE KEY-----",
            # inside a JSON string, newlines escaped
            r"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAA"
            r"AAAABAAAAMwAAAAtzc2gtZWQyNTUxOQAAACDx\n-----END OPENSSH PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0B1C"
            "\n\nsCI23vDf3tkjsK6X9KLV7LNLuu4hKAmkR+WgFgFj5xFc4O1xsx203KPwb547I8vx\n",
        ),
        fp=(
            "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1Lf"
            "VLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
            "-----END PUBLIC KEY-----",
            "-----BEGIN PRIVATE KEY-----\nYOUR_KEY_HERE\n-----END PRIVATE KEY-----",
        ),
    ),
    Rule(
        "jwt",
        "JSON Web Token (signed)",
        rb"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{16,}",
        tp=(
            "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODk"
            "wIiwibmFtZSI6ImJvdCIsImlhdCI6MTc2NDIwMTYwMH0.-vGYKSiPxFUuXJ273L-Jr5C1SLrPYKcFKHaAwS7pgVH",
        ),
        fp=(
            # alg "none" and no signature
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0.",
            # shaped like one, but the parts are not JSON
            "eyJxxxxxxxxxxxxx.eyJyyyyyyyyyyyyy.zzzzzzzzzzzzzzzzzzzz",
        ),
        check=checks.jwt_signed,
        check_failed=None,
    ),
)
