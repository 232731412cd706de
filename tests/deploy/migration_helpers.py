"""Helpers of the migration-loop tests: a fake service that is also the judge, and a gateway built from a project config.

The fake judge scores a candidate 90 when it is the reference word for word and 10 otherwise: with greedy decoding,
a local model that agrees with the service scores high and a degraded one low, and every score is known in advance.
"""

from __future__ import annotations

import json
import re
import time

import yaml

from tests.deploy.conftest import SERVE_KEY
from tests.fakes.fixtures import FAKE_KEY
from tests.fakes.protocols import ChatCall, default_reply

CLIENT_KEY = "gw-client-key-abcdef0123456789"
_FENCE = r"<<<{0}>>>\n(.*?)\n<<<END {0}>>>"


def fenced(text: str, name: str) -> str | None:
    match = re.search(_FENCE.format(name), text, re.S)
    return match.group(1) if match else None


class ServiceAndJudge:
    """The fake server's responder: judge calls (a schema) get scores, service calls the scripted answer per prompt."""

    def __init__(self, answers: dict[str, str] | None = None):
        self.answers = answers or {}
        self.judged: list[tuple[str, str]] = []

    def __call__(self, call: ChatCall) -> str:
        if call.schema is None:
            return self.answers.get(call.last_user, default_reply(call))
        item = call.last_user
        candidate, reference = fenced(item, "CANDIDATE"), fenced(item, "REFERENCE")
        self.judged.append((candidate or "", reference or ""))
        score = 90 if candidate is not None and candidate == reference else 10
        return json.dumps({"similarity": score, "similarity_reason": "compared word for word", "precision": score,
                           "precision_reason": "compared word for word"})


def judge_requests(fake) -> list:
    """The judge's requests the fake server received (they carry a JSON schema; service requests do not)."""
    return [r for r in fake.received("openai.chat") if (r.json or {}).get("response_format")]


def project_config(tmp_path, fake, monkeypatch, local_url: str, *, gateway: dict, evaluate: dict | None = None, **extra):
    """The project's config (also written to tmp_path/llamaduo.yaml): the fake server is the service and the judge."""
    from llamaduo.config import load_config

    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    monkeypatch.setenv("GW_SERVICE_KEY", FAKE_KEY)
    monkeypatch.setenv("GW_LOCAL_KEY", SERVE_KEY)
    monkeypatch.setenv("GW_CLIENTS", f"app1:{CLIENT_KEY}")
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": fake.openai_base_url, "api_key_env": "FAKE_SERVICE_KEY",
            "limits": {"timeout_s": 5, "max_retries": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.1}}
    gw = {"service": {"base_url": fake.openai_base_url, "api_key_env": "GW_SERVICE_KEY", "timeout_s": 10},
          "local": {"base_url": local_url, "api_key_env": "GW_LOCAL_KEY", "timeout_s": 20},
          "store_url": "sqlite:///captures.sqlite", "client_keys_env": "GW_CLIENTS", **gateway}
    data = {"project": {"workdir": str(tmp_path)}, "service": {"generator": role, "judge": [role]},
            "evaluate": {"repeats": 2, **(evaluate or {})}, "deploy": {"gateway": gw}, **extra}
    path = tmp_path / "llamaduo.yaml"  # for the commands run in-process (`--config`); keys stay in the environment
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def start_gateway(config):
    from llamaduo.deploy.gateway_run import build_gateway
    from llamaduo.deploy.serving import BackgroundServer

    app, store = build_gateway(config.deploy.gateway, config.workdir, config=config)
    return BackgroundServer(app).start(), store, app.state.migration


def wait_until(predicate, timeout: float = 60.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def live_rows(migration) -> list[dict]:
    s = migration.live_store.scores
    with migration.live_store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(s.select())]
