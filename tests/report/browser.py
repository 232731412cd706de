"""Headless Chromium over the DevTools protocol: load a page, collect console errors, inspect images, take a screenshot.

Uses the Debian `chromium` package if present; nothing is ever downloaded.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-port=0",
]


def available() -> bool:
    return Path(CHROMIUM).is_file()


@dataclass
class PageResult:
    console_errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    probe: Any = None
    screenshot: bytes = b""
    load_seconds: float = 0.0


class _Session:
    def __init__(self, ws: Any):
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == name:
                return event
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(message)
            if message.get("method") == name:
                return message


def load_page(url: str, probe_js: str | None = None, width: int = 1280, height: int = 2000) -> PageResult:
    """Open `url`, wait for the load event, and report console errors, image sizes and a full-page screenshot."""
    import httpx
    from websockets.sync.client import connect

    profile = tempfile.mkdtemp(prefix="llamaduo-chromium-")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError("chromium exited before it opened the DevTools port")
            if match := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
                port = int(match.group(1))
        if port is None:
            raise RuntimeError("chromium did not report a DevTools port in 30 s")
        target = httpx.put(f"http://127.0.0.1:{port}/json/new?about:blank", timeout=10).json()
        result = PageResult()
        with connect(target["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as ws:
            session = _Session(ws)
            for domain in ("Page", "Runtime", "Log"):
                session.call(f"{domain}.enable")
            started = time.monotonic()
            session.call("Page.navigate", url=url)
            session.wait_event("Page.loadEventFired")
            result.load_seconds = time.monotonic() - started
            result.images = session.call("Runtime.evaluate", returnByValue=True, expression=(
                "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))"
            ))["result"]["value"]
            if probe_js:
                result.probe = session.call("Runtime.evaluate", expression=probe_js, returnByValue=True)["result"].get("value")
            shot = session.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            result.screenshot = base64.b64decode(shot["data"])
            for event in session.events:
                params = event.get("params", {})
                if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    result.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
                elif event.get("method") == "Runtime.exceptionThrown":
                    result.console_errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
                elif event.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                    result.console_errors.append(params["entry"].get("text", ""))
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
