"""Hook implementations. Import-light: each detector loads (and compiles its
regexes) only when its factory is called."""

from __future__ import annotations

from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.dlp import DlpDetector, RunFinder


def _token_patterns() -> DlpDetector:
    from bot_bottle_dlp.token_patterns import TokenPatternsDetector

    return TokenPatternsDetector()


def _known_secrets() -> DlpDetector:
    from bot_bottle_dlp.known_secrets import KnownSecretsDetector

    return KnownSecretsDetector()


def _native_runs() -> RunFinder:
    from bot_bottle_dlp.native import NativeRunFinder

    return NativeRunFinder()


def _prompt_injection() -> DlpDetector:
    from bot_bottle_dlp.prompt_injection import PromptInjectionDetector

    return PromptInjectionDetector()


@hookimpl
def bot_bottle_register_dlp_detectors() -> list[Registration[DlpDetector]]:
    return [
        Registration(
            "token_patterns",
            _token_patterns,
            "provider token formats (AWS, GitHub, GitLab, Slack, OpenAI, Anthropic, ...)",
        ),
        Registration(
            "known_secrets",
            _known_secrets,
            "the bottle's own secret values, verbatim and encoded",
        ),
        Registration(
            "prompt_injection",
            _prompt_injection,
            "inbound tripwire: disclosure and jailbreak phrases",
        ),
    ]


@hookimpl
def bot_bottle_register_dlp_accelerators() -> list[Registration[RunFinder]]:
    return [
        Registration(
            "native_runs",
            _native_runs,
            "the decoded views' base64/hex runs found in C (optional extension)",
        )
    ]
