"""Running an ASGI app on a real socket: fail fast on a taken port, serve in the foreground or in a background thread."""

from __future__ import annotations

import errno
import socket
import threading
import time

from llamaduo.errors import LlamaduoError


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before loading any model, so a taken port fails in a second with one line instead of after a minute."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise LlamaduoError(f"port {port} on {host} is already in use", "Pick another with --port, or stop the process using it.") from None
        raise LlamaduoError(f"cannot listen on {host}:{port}: {exc.strerror}", "Check --host and --port.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app, sock: socket.socket, log_level: str):
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2, lifespan="on")
    return uvicorn.Server(config)


def run_foreground(app, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn installs the signal handlers)."""
    _uvicorn_server(app, sock, log_level).run(sockets=[sock])


class BackgroundServer:
    """A real HTTP server on a loopback port in a daemon thread: used by the gateway's tests and benchmarks."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.sock = bind_socket(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self._server = _uvicorn_server(app, self.sock, log_level)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        self._thread.start()
        end = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > end or not self._thread.is_alive():
                raise RuntimeError("the background server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
