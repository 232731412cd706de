"""Building and running the gateway from the config: keys, upstreams, the capture store, the socket."""

from __future__ import annotations

import os
from pathlib import Path

from llamaduo.deploy.capture import CaptureStore, resolve_store_url
from llamaduo.deploy.config import GatewayConfig, UpstreamConfig
from llamaduo.deploy.keys import load_client_keys
from llamaduo.errors import LlamaduoError

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def upstream_key(name: str, cfg: UpstreamConfig) -> str | None:
    """The upstream's key from its environment variable; a remote service without one is a setup error."""
    if not cfg.api_key_env:
        return None
    key = os.environ.get(cfg.api_key_env, "").strip()
    if key:
        return key
    if any(f"//{host}" in cfg.base_url for host in _LOCAL_HOSTS):
        return None
    raise LlamaduoError(
        f"gateway.{name}: environment variable {cfg.api_key_env} is not set",
        f"Export {cfg.api_key_env}=<key> or set gateway.{name}.api_key_env to the variable that holds it.",
    )


def open_store(settings: GatewayConfig, base: Path) -> CaptureStore:
    return CaptureStore(resolve_store_url(settings.store_url, base))


def local_upstream(cfg: UpstreamConfig, runs_dir: Path | None = None) -> UpstreamConfig:
    """gateway.local with its model named the way `llamaduo serve` names it: a run id, RUN:iter-K or a model path
    becomes that server's default model id; any other name (a served model name) passes unchanged."""
    if not cfg.model:
        return cfg
    from llamaduo.artifacts import resolve_artifact

    return cfg.model_copy(update={"model": resolve_artifact(cfg.model, runs_dir=runs_dir, fetch=False).served_name})


def build_gateway(settings: GatewayConfig, base: Path, runs_dir: Path | None = None, config=None):
    """(app, store) for these settings; nothing listens yet. `config` (the project's) is needed for live judging."""
    from llamaduo.deploy.gateway import Upstream, create_gateway_app
    from llamaduo.deploy.migration import Migration

    client_keys = load_client_keys(settings.client_keys_env, settings.client_keys_file)
    service = Upstream("service", settings.service, upstream_key("service", settings.service))
    local = None
    if settings.mode in ("shadow", "canary", "local"):
        local_cfg = local_upstream(settings.local, runs_dir)
        local = Upstream("local", local_cfg, upstream_key("local", local_cfg))
    store = open_store(settings, base)
    try:
        migration = Migration(settings, store, config)
    except BaseException:
        store.close()
        raise
    return create_gateway_app(settings, store, service, local, client_keys, migration), store


def run_gateway(settings: GatewayConfig, base: Path, announce=print, runs_dir: Path | None = None, config=None) -> int:
    from llamaduo.deploy.serving import bind_socket, run_foreground

    sock = bind_socket(settings.host, settings.port)
    app, store = build_gateway(settings, base, runs_dir, config)
    try:
        port = sock.getsockname()[1]
        target = settings.local.base_url if settings.mode == "local" else settings.service.base_url
        live_store = app.state.migration.live_store
        mode = (live_store.current_mode()[0] if settings.policy.enabled else None) or settings.mode  # the policy's mode, kept in the store
        extra = (" (policy on)" if settings.policy.enabled else "") + (f", judging {settings.live_eval.share:g} of pairs" if settings.live_eval.enabled else "")
        announce(f"gateway ({mode}{extra}) on http://{settings.host}:{port}/v1 -> {target}")
        run_foreground(app, sock)
    finally:
        store.close()
        sock.close()
    return 0
