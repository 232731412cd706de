"""Pytest fixtures around the fake service server, registered for the whole suite by tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.service_server import FakeServiceServer

FAKE_KEY = "sk-fake-test-key-0123456789abcdef"


@pytest.fixture
def fake_service() -> Iterator[FakeServiceServer]:
    """A started fake provider on 127.0.0.1 (random port); tune it, then assert on `.received()` / `.count()`."""
    with FakeServiceServer() as server:
        yield server


def fake_config(server: FakeServiceServer, workdir: Path, *, provider: str = "openai", model: str = "gpt-4o-mini", **service: Any) -> Any:
    """A Config whose generator and judge talk to `server`; `service` adds service-section keys (budget_usd, ...).

    Keys are read from FAKE_SERVICE_KEY (set it with monkeypatch.setenv or use the `service_config` fixture).
    """
    from llamaduo.config import load_config

    base = server.openai_base_url if provider == "openai" else server.url
    role = {"provider": provider, "model": model, "base_url": base, "api_key_env": "FAKE_SERVICE_KEY",
            "limits": {"timeout_s": 5, "max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.1}}
    role.update(service.pop("role", {}))
    data = {"project": {"workdir": str(workdir)}, "service": {"generator": role, "judge": [role], **service}}
    return load_config(data=data)


@pytest.fixture
def service_config(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Config (project folder = tmp_path) whose service roles point at `fake_service` with a fake key."""
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    return fake_config(fake_service, tmp_path)
