"""The built-in bot-bottle DLP detectors (token_patterns, known_secrets, prompt_injection)."""

__version__ = "0.1.0"
