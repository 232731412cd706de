"""Shared fakes for tests and benchmarks: a real loopback HTTP server speaking the service providers' protocols.

    from tests.fakes import FakeServiceServer, Fault
    with FakeServiceServer(latency_ms=5) as server:
        server.enqueue(Fault.rate_limited("1"), "a scripted reply")
        ... point the client at server.openai_base_url / anthropic_base_url / gemini_base_url ...
        assert server.count("openai.chat") == 2

In pytest, the `fake_service` fixture (tests/fakes/fixtures.py) gives a started server and the `service_config`
fixture a Config whose generator and judge point at it.
"""

from typing import Any

__all__ = ["ChatCall", "FakeServiceServer", "Fault", "Received", "ToolCalls", "default_reply", "instance_of"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m tests.fakes.service_server` does not import the module twice.
    if name in ("FakeServiceServer", "Fault", "Received"):
        from tests.fakes import service_server

        return getattr(service_server, name)
    if name in ("ChatCall", "ToolCalls", "default_reply", "instance_of"):
        from tests.fakes import protocols

        return getattr(protocols, name)
    raise AttributeError(name)
