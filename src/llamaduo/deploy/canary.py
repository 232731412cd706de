"""Who answers a request: the gateway's current mode, and in canary mode a share of requests (sticky when asked).

The mode may change while the gateway runs (the policy, or another replica's decision read from the store), so
every request reads it here rather than from the config.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from llamaduo.deploy.migration_config import CanaryConfig

CONVERSATION_HEADER = "x-llamaduo-conversation"


def _unit(text: str) -> float:
    """A stable number in [0, 1) for a text: the same client or conversation lands on the same side on every replica."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def conversation_key(payload: dict[str, Any], client: str, header: str | None = None) -> str:
    """A conversation's identity: the header when the app sends one, else its opening system and user turns, which
    every later turn of the same chat repeats."""
    if header:
        return f"{client}|h|{header}"
    opening = []
    for message in payload.get("messages") or []:
        if not isinstance(message, dict):
            continue
        opening.append({"role": message.get("role"), "content": message.get("content")})
        if message.get("role") == "user":
            break
    return f"{client}|m|{json.dumps(opening, sort_keys=True, default=str)}"


class Router:
    """The mode (read on every request) and the canary split."""

    def __init__(self, mode: str, canary: CanaryConfig, rng: random.Random | None = None):
        self.mode = mode
        self.canary = canary
        self._rng = rng or random.Random()

    def answer_locally(self, payload: dict[str, Any], client: str, conversation: str | None = None) -> bool:
        if self.mode == "local":
            return True
        if self.mode != "canary":
            return False
        share = self.canary.share
        if self.canary.sticky == "client":
            return _unit(f"client|{client}") < share
        if self.canary.sticky == "conversation":
            return _unit(conversation_key(payload, client, conversation)) < share
        return self._rng.random() < share

    def shadows(self, answered_by: str) -> bool:
        """Whether a request the service answered is also put to the local model in the background."""
        return answered_by != "local" and self.mode in ("shadow", "canary")
