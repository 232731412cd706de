"""API keys: read from the environment or a key file, never stored, and scrubbed from every message we emit."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

from llamaduo.errors import LlamaduoError

# Local servers (Ollama, vLLM, llama.cpp...) usually ignore the key, but the SDKs insist on one.
LOCAL_PLACEHOLDER_KEY = "not-needed"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
_KNOWN_SECRETS: set[str] = set()
# Shapes of common provider keys, scrubbed even if they never passed through `resolve_key`.
_KEY_SHAPES = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,})")


def is_local(base_url: str | None) -> bool:
    if not base_url:
        return False
    return (urlparse(base_url).hostname or "") in _LOCAL_HOSTS


def resolve_key(env_var: str, key_file: str | os.PathLike[str] | None, base_url: str | None, role: str) -> str:
    """The key for one role: the key file if configured, else the environment; a placeholder for local servers."""
    key: str | None = None
    if key_file:
        path = Path(os.path.expanduser(str(key_file)))
        if not path.is_file():
            raise LlamaduoError(f"service.{role}.api_key_file {path} does not exist", "Point it at a file holding only the key.")
        key = path.read_text(encoding="utf-8").strip() or None
    if key is None:
        key = os.environ.get(env_var, "").strip() or None
    if key is None:
        if is_local(base_url):
            return LOCAL_PLACEHOLDER_KEY
        raise LlamaduoError(
            f"the API key for service.{role} is missing: environment variable {env_var} is not set",
            f"Export {env_var}=<your key> (or set service.{role}.api_key_file).",
        )
    remember_secret(key)
    return key


def remember_secret(secret: str) -> None:
    if secret and secret != LOCAL_PLACEHOLDER_KEY and len(secret) >= 6:
        _KNOWN_SECRETS.add(secret)


def scrub(text: str) -> str:
    """Remove every known key (and anything shaped like one) from a message."""
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return _KEY_SHAPES.sub("***", text)
