"""Fixtures of the deploy tests: a tiny chat model saved like a run's merged/ folder, and real loopback servers over it."""

from __future__ import annotations

import pytest

from tests.deploy.tiny_model import build_tiny_chat_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "merged")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    from llamaduo.infer.engines import EngineSpec, open_engine

    return open_engine(EngineSpec(kind="transformers", model=str(tiny_model), model_id="tiny", precision="fp32"))


@pytest.fixture(scope="session")
def serve_url(tiny_engine):
    """`llamaduo serve`'s app over the tiny model, with bearer auth and small limits, on a loopback port."""
    from llamaduo.deploy.config import ServeConfig
    from llamaduo.deploy.server import create_app
    from llamaduo.deploy.serving import BackgroundServer

    settings = ServeConfig(max_tokens=64, max_body_bytes=4096, concurrency=1, queue_size=8, timeout_s=60)
    app = create_app(tiny_engine, settings, keys={"sk-test-serve-key": "tester"})
    with BackgroundServer(app) as server:
        yield server.url


SERVE_KEY = "sk-test-serve-key"
