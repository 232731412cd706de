"""Crash isolation: any engine of the registry, run in a worker process that `serve` restarts when it dies.

A native crash (SIGSEGV in llama.cpp), a kill, the OOM killer or a hang ends only the worker: the requests in flight
get EngineCrashed (HTTP 503, so a gateway in local mode falls back to the service), new requests get 503 until a new
worker is up, and the worker restarts with an exponential backoff. The parent speaks to the worker over one pipe:

    parent -> worker   ("call", rid, method, args) | ("gen", rid, fields) | ("cancel", rid) | ("stop",)
    worker -> parent   ("ready", info) | ("failed", (problem, fix)) | ("ok", rid, value) | ("tok", rid, text, id)
                       | ("end", rid) | ("err", rid, status, message)
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from llamaduo.errors import LlamaduoError
from llamaduo.infer.engines import EngineSpec
from llamaduo.infer.engines.base import Engine, EngineCrashed, EngineError, EngineStopped, GenParams, StepOut

log = logging.getLogger("llamaduo.serve")

_END = object()
CALLS = frozenset({"render_chat", "tokenize", "tokenize_plain", "decode", "tool_format"})


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class WorkerEngine(Engine):
    """The engine `spec` names, in a child process; the same interface as an in-process engine."""

    def __init__(self, spec: EngineSpec, *, hang_timeout_s: float = 120.0, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 start_timeout_s: float = 900.0):
        self.spec = spec
        self.hang_timeout_s = hang_timeout_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.start_timeout_s = start_timeout_s
        self.crashes = 0
        self.restarts = 0
        self.last_crash: str | None = None
        self._listeners: list[Callable[[str], None]] = []
        self._ctx = multiprocessing.get_context("spawn")  # fork would copy the parent's threads and OpenMP state
        self._state_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, queue.Queue] = {}
        self._ids = itertools.count()
        self._state = "starting"
        self._consecutive = 0
        self._last_heard = time.monotonic()
        self._info = self._spawn()  # the first start fails loudly: a model that cannot load is the user's to fix
        self._state = "ready"
        threading.Thread(target=self._watchdog, daemon=True, name="llamaduo-engine-watchdog").start()

    # ---- the Engine interface -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    @property
    def state(self) -> str:
        return self._state

    def describe(self) -> dict[str, Any]:
        return {**self._info.get("describe", {}), "isolation": "process", "worker_pid": self._proc.pid,
                "state": self._state, "crashes": self.crashes, "restarts": self.restarts, "last_crash": self.last_crash}

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """`listener("crash")` and `listener("restart")` are called as they happen (serve's /metrics counts them)."""
        self._listeners.append(listener)

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        return self._call("render_chat", messages, tools)

    def tool_format(self) -> dict[str, Any]:
        return self._call("tool_format")

    def tokenize(self, text: str) -> list[int]:
        return self._call("tokenize", text)

    def tokenize_plain(self, text: str) -> list[int]:
        return self._call("tokenize_plain", text)

    def decode(self, ids: list[int]) -> str:
        return self._call("decode", ids)

    def generate(self, params: GenParams) -> Iterator[StepOut]:
        rid, inbox = self._open()
        fields = {"prompt_ids": params.prompt_ids, "max_tokens": params.max_tokens, "temperature": params.temperature,
                  "top_p": params.top_p, "seed": params.seed, "json_schema": params.json_schema}
        finished = False
        try:
            self._send(("gen", rid, fields))
            while True:
                try:
                    item = inbox.get(timeout=0.05)
                except queue.Empty:
                    if params.cancel.is_set():
                        return
                    continue
                if item is _END:
                    finished = True
                    self._consecutive = 0  # a worker that answers has recovered
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            self._close_request(rid, cancel=not finished)

    def close(self) -> None:
        with self._state_lock:
            if self._state == "closed":
                return
            self._state = "closed"
        try:
            self._send(("stop",))
        except EngineError:
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        self._fail_pending(EngineStopped("the engine has been stopped"))

    # ---- plumbing -------------------------------------------------------------------------------

    def _spawn(self) -> dict[str, Any]:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=worker_main, args=(child, self.spec.model_dump_json()), daemon=True, name="llamaduo-engine")
        proc.start()
        child.close()
        deadline = time.monotonic() + self.start_timeout_s
        while not parent.poll(0.2):
            if not proc.is_alive() or time.monotonic() > deadline:
                proc.kill()
                proc.join(timeout=5)
                raise LlamaduoError(
                    f"the {self.spec.kind} engine's worker process {_describe_exit(proc.exitcode)} while loading {self.spec.model}",
                    "Run `llamaduo doctor` to see which native paths work on this machine.",
                )
        try:
            kind, payload = parent.recv()
        except (EOFError, OSError):
            proc.join(timeout=5)
            raise LlamaduoError(f"the engine's worker process {_describe_exit(proc.exitcode)} while loading", "Run `llamaduo doctor`.") from None
        if kind == "failed":
            proc.join(timeout=5)
            problem, fix = payload
            raise LlamaduoError(problem, fix or "Check the model path and the engine (`llamaduo doctor`).")
        self._conn, self._proc = parent, proc
        self.name = payload["name"]
        self.model_id = payload["model_id"]
        self.context_length = payload["context_length"]
        self.supports_json_schema = payload["supports_json_schema"]
        self._last_heard = time.monotonic()
        threading.Thread(target=self._read, args=(parent, proc), daemon=True, name="llamaduo-engine-reader").start()
        return payload

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError) as exc:  # the worker died between our check and the send
                raise EngineCrashed(f"the engine's worker process is gone ({exc}); it is being restarted") from None

    def _open(self) -> tuple[int, queue.Queue]:
        if self._state != "ready":
            raise (EngineStopped("the engine has been stopped") if self.closed else
                   EngineCrashed("the engine is restarting after a crash; retry shortly"))
        rid, inbox = next(self._ids), queue.Queue()
        if not self._pending:  # the hang clock starts when work starts, not at the last message of an idle worker
            self._last_heard = time.monotonic()
        self._pending[rid] = inbox
        return rid, inbox

    def _close_request(self, rid: int, *, cancel: bool) -> None:
        if self._pending.pop(rid, None) is not None and cancel and self._state == "ready":
            try:
                self._send(("cancel", rid))
            except EngineError:
                pass

    def _call(self, method: str, *args: Any, timeout: float = 120.0) -> Any:
        rid, inbox = self._open()
        try:
            self._send(("call", rid, method, args))
            try:
                item = inbox.get(timeout=timeout)
            except queue.Empty:
                raise EngineCrashed(f"the engine did not answer {method} within {timeout:g}s") from None
            if isinstance(item, BaseException):
                raise item
            return item
        finally:
            self._pending.pop(rid, None)

    def _read(self, conn, proc) -> None:
        """Deliver the worker's messages to the waiting requests; a closed pipe means the worker died."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            self._last_heard = time.monotonic()
            kind, rid = message[0], message[1]
            inbox = self._pending.get(rid)
            if inbox is None:
                continue  # a cancelled request's last tokens
            if kind == "tok":
                inbox.put(StepOut(message[2], message[3]))
            elif kind == "end":
                inbox.put(_END)
            elif kind == "ok":
                inbox.put(message[2])
            elif kind == "err":
                error = EngineError(message[3])
                error.status = message[2]
                inbox.put(error)
        proc.join(timeout=5)
        self._crashed(_describe_exit(proc.exitcode))

    def _crashed(self, how: str) -> None:
        with self._state_lock:
            if self._state in ("closed", "restarting"):
                return
            self._state = "restarting"
            self.crashes += 1
            self._consecutive += 1
            self.last_crash = f"the engine's worker process {how}"
        log.error("%s; restarting it", self.last_crash)
        self._fail_pending(EngineCrashed(f"{self.last_crash} during this request; it is being restarted"))
        self._emit("crash")
        threading.Thread(target=self._restart, daemon=True, name="llamaduo-engine-restart").start()

    def _restart(self) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (self._consecutive - 1))
        while self._state == "restarting":
            time.sleep(delay)
            if self._state != "restarting":
                return
            try:
                self._info = self._spawn()
            except LlamaduoError as exc:
                log.error("restarting the engine failed: %s", exc)
                delay = min(self.max_backoff_s, delay * 2)
                continue
            with self._state_lock:
                if self._state == "closed":
                    self._proc.kill()
                    return
                self._state = "ready"
                self.restarts += 1
            log.warning("the engine's worker process is back (pid %s, restart %d)", self._proc.pid, self.restarts)
            self._emit("restart")
            return

    def _fail_pending(self, error: EngineError) -> None:
        for rid in list(self._pending):
            inbox = self._pending.pop(rid, None)
            if inbox is not None:
                inbox.put(error)

    def _watchdog(self) -> None:
        """A worker that is silent for hang_timeout_s while requests wait on it is hung: kill it (the reader restarts it)."""
        while self._state != "closed":
            time.sleep(min(1.0, self.hang_timeout_s / 4))
            if self._state == "ready" and self._pending and time.monotonic() - self._last_heard > self.hang_timeout_s:
                log.error("the engine's worker process sent nothing for %.0fs with requests waiting; killing it", self.hang_timeout_s)
                self._proc.kill()

    def _emit(self, event: str) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a metrics hook must never break recovery
                log.exception("engine event listener failed")


def worker_main(conn, spec_json: str) -> None:
    """The worker process: load the engine, then answer calls and run generations one at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it stops us through the pipe
    from llamaduo.infer.engines import open_engine

    try:
        engine = open_engine(EngineSpec.model_validate_json(spec_json))
    except BaseException as exc:  # reported to the parent as one line
        if isinstance(exc, LlamaduoError):
            conn.send(("failed", (exc.problem, exc.fix)))
        else:
            conn.send(("failed", (f"{type(exc).__name__}: {exc}", None)))
        return
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    conn.send(("ready", {"name": engine.name, "model_id": engine.model_id, "context_length": engine.context_length,
                         "supports_json_schema": engine.supports_json_schema, "describe": engine.describe(), "pid": os.getpid()}))
    jobs: queue.Queue = queue.Queue()
    cancels: dict[int, threading.Event] = {}

    def run_generations() -> None:
        while True:
            rid, params = jobs.get()
            try:
                if not params.cancel.is_set():
                    for step in engine.generate(params):
                        send(("tok", rid, step.text, step.token_id))
                send(("end", rid))
            except EngineError as exc:
                send(("err", rid, exc.status, str(exc)))
            except Exception as exc:  # the model failed, not the request
                send(("err", rid, 500, f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                cancels.pop(rid, None)

    threading.Thread(target=run_generations, daemon=True, name="llamaduo-generate").start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone
        kind = message[0]
        if kind == "gen":
            params = GenParams(**message[2])
            cancels[message[1]] = params.cancel
            jobs.put((message[1], params))
        elif kind == "cancel":
            event = cancels.get(message[1])
            if event is not None:
                event.set()
        elif kind == "call":
            _, rid, method, args = message
            try:
                if method not in CALLS:
                    raise EngineError(f"unknown engine call {method}")
                send(("ok", rid, getattr(engine, method)(*args)))
            except EngineError as exc:
                send(("err", rid, exc.status, str(exc)))
            except Exception as exc:
                send(("err", rid, 500, f"{method} failed: {type(exc).__name__}: {exc}"))
        elif kind == "stop":
            engine.close()
            os._exit(0)
