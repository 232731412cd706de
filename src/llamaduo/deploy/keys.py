"""Bearer tokens for `serve` and `gateway`: read from an environment variable or a file, compared in constant time.

Tokens are kept in memory only; what gets logged is the client's name, never the token.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from llamaduo.errors import LlamaduoError


def load_client_keys(env_var: str | None, key_file: str | os.PathLike[str] | None) -> dict[str, str]:
    """{token: client name}. Entries are `name:token` or a bare token (named client-N)."""
    entries: list[str] = []
    if env_var and os.environ.get(env_var):
        entries += [e.strip() for e in os.environ[env_var].split(",")]
    if key_file:
        path = Path(os.path.expanduser(str(key_file)))
        if not path.is_file():
            raise LlamaduoError(f"key file {path} does not exist", "Create it with one `name:token` or token per line, or drop the setting.")
        entries += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    keys: dict[str, str] = {}
    for i, entry in enumerate(e for e in entries if e and not e.startswith("#")):
        name, sep, token = entry.partition(":")
        if not sep:
            name, token = f"client-{i + 1}", entry
        keys[token.strip()] = name.strip() or f"client-{i + 1}"
    return keys


def check_bearer(header: str | None, keys: dict[str, str]) -> str | None:
    """The client name for a valid `Authorization: Bearer <token>`, None when it is missing or wrong."""
    if not header or not header.lower().startswith("bearer "):
        return None
    given = header[7:].strip().encode()
    found = None
    for token, name in keys.items():
        # Compare against every key so timing does not reveal which prefix matched.
        if hmac.compare_digest(given, token.encode()):
            found = name
    return found
