"""PII redaction for captured traffic: emails, phone numbers and credentials become placeholders before any write."""

from __future__ import annotations

import re
from typing import Any

# Credentials first: a key can contain digit runs that would otherwise look like a phone number.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("[KEY]", re.compile(r"\b(?:sk|pk|rk)-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}")),
    ("[KEY]", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("[KEY]", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("[KEY]", re.compile(r"\b(?:ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}\b")),
    ("[KEY]", re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}\b")),
    ("[KEY]", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-]{16,}")),
    ("[EMAIL]", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")),
    # Phone numbers: an optional +country code, then 7-15 digits in groups; bare years and short numbers don't match.
    ("[PHONE]", re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]\d{2,4}){1,4}(?![\w])")),
]
_MIN_PHONE_DIGITS = 7


def redact_text(text: str) -> str:
    for placeholder, pattern in _PATTERNS:
        if placeholder == "[PHONE]":
            text = pattern.sub(lambda m: placeholder if sum(c.isdigit() for c in m.group()) >= _MIN_PHONE_DIGITS else m.group(), text)
        else:
            text = pattern.sub(placeholder, text)
    return text


def redact(value: Any) -> Any:
    """Redact every string inside a JSON-like value (request bodies, responses)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    return value
