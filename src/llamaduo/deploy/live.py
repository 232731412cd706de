"""Live judging: a share of the gateway's pairs (service answer as the reference, local answer as the candidate) sent to
the judges in the background, with `llamaduo eval`'s rubric, repeats and ensemble, booked to ledger stage `live_eval`.

The request path only calls `offer`, which never waits: a full queue skips the pair. The judging runs in a child
process (its threads have their own event loops), so neither a slow judge nor the judging's CPU work (rendering,
parsing, the database) holds the gateway's interpreter while it answers a client.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from typing import Any

from llamaduo.deploy.livestore import LiveStore, day_start
from llamaduo.errors import BudgetExceeded, ConfigError, LlamaduoError

log = logging.getLogger("llamaduo.gateway")
STAGE = "live_eval"


def chosen(capture_id: str, share: float) -> bool:
    """Whether a pair is judged: its random id read as a number in [0, 1), so every replica chooses the same pairs."""
    try:
        return int(capture_id[:8], 16) / 0x1_0000_0000 < share
    except ValueError:
        return False


def message_text(message: Any) -> str:
    """The text of an OpenAI message (string content, or the text parts of a content list)."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text"))
    return content if isinstance(content, str) else ""


def answer_of(response: Any) -> tuple[str, list[dict] | None] | None:
    """(text, tool calls) of a chat completion's first choice; None when it is no answer (an error, nothing stored)."""
    if not isinstance(response, dict) or not isinstance(response.get("choices"), list) or not response["choices"]:
        return None
    message = response["choices"][0].get("message") or {}
    calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else None
    return message_text(message), calls or None


def check_judges(config: Any, live: Any) -> None:
    """Refuse to start live judging that cannot work or cannot be held to its budget, before any traffic."""
    if not config.service.judge or not config.evaluate.judge:
        raise ConfigError("deploy.gateway.live_eval.enabled needs a judge, but service.judge is empty or evaluate.judge is off",
                          "List a judge under service.judge (and keep evaluate.judge true), or set live_eval.enabled: false.")
    from llamaduo.service.keys import resolve_key
    from llamaduo.service.prices import price_for, unpriced_error

    for i, judge in enumerate(config.service.judge):
        resolve_key(judge.key_env, config.path(judge.api_key_file) if judge.api_key_file else None, judge.base_url, f"judge.{i}")
        if live.daily_budget_usd is not None and price_for(judge, config.service.prices, label=f"service.judge.{i}") is None:
            raise unpriced_error(f"service.judge.{i}", judge.model)


class LiveJudge:
    """Background threads (live_eval.concurrency) that judge offered pairs and write their scores beside the capture rows."""

    def __init__(self, config: Any, store: LiveStore, clock=time.time, on_done=None):
        self.config, self.store, self.clock = config, store, clock
        self.on_done = on_done or (lambda status: None)
        """Called with each pair's outcome (judged, skipped or failed)."""
        self.settings = config.deploy.gateway.live_eval
        self.queue: queue.Queue[str | None] = queue.Queue(maxsize=self.settings.queue_size)
        self.counts = {"offered": 0, "dropped": 0, "judged": 0, "skipped": 0, "failed": 0}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._reserved = 0.0  # worst cases of the pairs being judged now, not yet in the store's spend

    def start(self) -> LiveJudge:
        for i in range(self.settings.concurrency):
            thread = threading.Thread(target=self._work, daemon=True, name=f"llamaduo-live-judge-{i}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the pairs being judged; the ones still queued are left unjudged (a stopping gateway does not drain a backlog)."""
        self._stopping.set()
        for _ in self._threads:
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                break  # every thread checks the flag before its next pair
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def chosen(self, capture_id: str) -> bool:
        return self.settings.enabled and chosen(capture_id, self.settings.share)

    def offer(self, capture_id: str) -> None:
        """Queue a chosen pair whose two answers are stored; never blocks (a full queue skips the pair, counted in /metrics)."""
        self.counts["offered"] += 1
        try:
            self.queue.put_nowait(capture_id)
        except queue.Full:
            self.counts["dropped"] += 1

    def _work(self) -> None:
        while not self._stopping.is_set():
            capture_id = self.queue.get()
            if capture_id is None or self._stopping.is_set():
                return
            try:
                status = self.judge(capture_id)
            except Exception:  # a bug here must not end live judging for the gateway's lifetime
                log.exception("live judging of %s failed", capture_id)
                status = "failed"
            with self._lock:
                self.counts[status] = self.counts.get(status, 0) + 1
            self.on_done(status)

    # ---- one pair ------------------------------------------------------------------------------

    def judge(self, capture_id: str) -> str:
        """Judge one stored pair; returns judged, skipped or failed (also written to the store with the reason)."""
        row = self.store.capture(capture_id)
        if row is None:
            return "skipped"
        existing = self._existing(capture_id)
        item, why = self._item(row, existing)
        if item is None:
            self.store.put_score(capture_id, "skipped", reason=why, reference_from=existing.get("reference_from"), reference=existing.get("reference"))
            return "skipped"
        ec = self.config.evaluate
        from llamaduo.evaluate.rubric import load_rubric

        rubric = load_rubric(ec.mode, path=self.config.path(ec.rubric) if ec.rubric else None, version=ec.rubric_version)
        ref_from = existing.get("reference_from") or "service_answer"
        budget, worst = self.settings.daily_budget_usd, 0.0
        if budget is not None:
            worst = self.worst_case_usd(item, rubric)
            with self._lock:  # the store's spend today (every replica's), plus what this replica's threads may still spend
                spent = self.store.spent_since(day_start(self.clock()))
                if spent + self._reserved + worst > budget:
                    why = (f"daily live-judging budget: ${spent:.4f} of ${budget:.2f} spent today (${self._reserved:.4f} in flight), "
                           f"this pair may cost up to ${worst:.4f}")
                    worst = -1.0
                else:
                    self._reserved += worst
            if worst < 0:
                self.store.put_score(capture_id, "skipped", reason=why, reference_from=ref_from, reference=existing.get("reference"))
                return "skipped"
        try:
            return self._judge_and_store(capture_id, item, rubric, ref_from, existing)
        finally:
            with self._lock:
                self._reserved = max(0.0, self._reserved - worst)

    def _judge_and_store(self, capture_id: str, item: Any, rubric: Any, ref_from: str, existing: dict[str, Any]) -> str:
        from llamaduo.evaluate.api import _apply_judgments
        from llamaduo.evaluate.ensemble import judge_all
        from llamaduo.evaluate.report import ItemScores

        ec = self.config.evaluate
        try:
            judgments, cost = judge_all(self.config, [item], rubric, None, 0, resume=False, stage=STAGE)
        except BudgetExceeded as exc:
            self.store.put_score(capture_id, "skipped", reason=exc.message, reference_from=ref_from, reference=existing.get("reference"))
            return "skipped"
        except LlamaduoError as exc:
            self.store.put_score(capture_id, "failed", reason=exc.message, reference_from=ref_from, reference=existing.get("reference"))
            return "failed"
        scored = ItemScores(example_id=capture_id, task="live", sample=0)
        _apply_judgments([scored], judgments, ec.mode, ec.ensemble)
        scores = {k: v for k, v in scored.scores.items() if v is not None}
        failed = sum(not j.ok for j in judgments)
        status = "judged" if scores else "failed"
        reason = None if scores else f"all {len(judgments)} judgments failed: {(judgments[0].error or '')[:200] if judgments else 'no judge'}"
        self.store.put_score(capture_id, status, reason=reason, scores=scores, per_judge=scored.per_judge, reference_from=ref_from,
                             reference=existing.get("reference"), rubric=rubric.id, judgments=len(judgments), failed=failed, cost_usd=cost)
        return status

    def _existing(self, capture_id: str) -> dict[str, Any]:
        s = self.store.scores
        with self.store.engine.connect() as conn:
            row = conn.execute(s.select().where(s.c.capture_id == capture_id)).first()
        return dict(row._mapping) if row is not None else {}

    def _item(self, row: dict[str, Any], existing: dict[str, Any]) -> tuple[Any, str]:
        """The pair as an evaluation item: (Item, "") or (None, why it cannot be judged)."""
        from llamaduo.evaluate.offline import Item
        from llamaduo.records import Answer, Message, ToolCall

        request = row["request"] if isinstance(row["request"], dict) else {}
        if row["answered_by"] == "local":
            reference, candidate = answer_of(existing.get("reference")), answer_of(row["response"])
        else:
            reference, candidate = answer_of(row["response"]), answer_of(row["local_response"])
        if reference is None:
            return None, "no service answer to use as the reference"
        if candidate is None:
            return None, "no local answer to judge (it failed or never came)"
        messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
        instruction = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        turns = []
        for m in messages:
            try:
                turns.append(Message(role=m.get("role"), content=message_text(m) or None, tool_calls=m.get("tool_calls") or None,
                                     tool_call_id=m.get("tool_call_id")))
            except ValueError:
                continue  # a turn llamaduo's records cannot hold (e.g. an image only): the judge sees the rest
        try:
            calls = [ToolCall.model_validate(c) for c in candidate[1] or []] or None
            ref_calls = [ToolCall.model_validate(c) for c in reference[1] or []] or None
        except ValueError:
            calls, ref_calls = None, None
        answer = Answer(example_id=row["id"], task="live", messages=turns or [Message(role="user", content=instruction or "-")],
                        text=candidate[0], tool_calls=calls, reference=reference[0], model=row.get("model") or "")
        tools = request.get("tools") if isinstance(request.get("tools"), list) else None
        return Item(answer, instruction, reference[0], {}, tools, ref_calls), ""

    def worst_case_usd(self, item: Any, rubric: Any) -> float:
        """The most this pair's judging may cost on its first attempt: every judge, M repeats, max_tokens each."""
        from llamaduo.evaluate.judge import PairVerdict, PointwiseVerdict
        from llamaduo.evaluate.rubric import fence
        from llamaduo.service import structured
        from llamaduo.service.client import Prepared
        from llamaduo.service.prices import cost_usd, price_for
        from llamaduo.service.types import Usage

        ec = self.config.evaluate
        chars = ec.max_candidate_chars
        if ec.mode == "pairwise":
            messages = rubric.messages(instruction=fence(item.instruction, chars), answer_a=fence(item.answer.full_text, chars),
                                       answer_b=fence(item.reference, chars))
            schema, orders = PairVerdict, 2
        else:
            messages = rubric.messages(instruction=fence(item.instruction, chars), reference=fence(item.reference, chars),
                                       candidate=fence(item.answer.full_text, chars), tools="", conversation="", checks="")
            schema, orders = PointwiseVerdict, 1
        total = 0.0
        for i, judge in enumerate(self.config.service.judge):
            limit = judge.params.max_tokens
            tokens = Prepared(messages, {"max_tokens": limit}, structured.as_schema(schema)).estimated_input_tokens()
            price = price_for(judge, self.config.service.prices, label=f"service.judge.{i}")
            total += orders * cost_usd(Usage(input_tokens=tokens, output_tokens=limit * ec.repeats), price)
        return total


OUTCOMES = ("judged", "skipped", "failed")


class JudgeProcess:
    """LiveJudge in a child process, fed capture ids through a bounded queue; the gateway's side never blocks."""

    def __init__(self, config: Any, store_url: str):
        ctx = multiprocessing.get_context("spawn")  # fork would copy the gateway's threads and event loop
        self.settings = config.deploy.gateway.live_eval
        self.queue = ctx.Queue(maxsize=self.settings.queue_size)
        self._done = ctx.Array("q", len(OUTCOMES))
        self._offered = self._dropped = 0
        self._proc = ctx.Process(target=judge_process_main, args=(config, store_url, self.queue, self._done), daemon=True,
                                 name="llamaduo-live-judge")

    @property
    def counts(self) -> dict[str, int]:
        return {"offered": self._offered, "dropped": self._dropped, **dict(zip(OUTCOMES, self._done[:], strict=True))}

    def start(self) -> JudgeProcess:
        self._proc.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """The child finishes the pairs it is judging; queued ones stay unjudged (a stopping gateway drains no backlog)."""
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            self._proc.terminate()
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self.queue.close()

    def chosen(self, capture_id: str) -> bool:
        return self.settings.enabled and chosen(capture_id, self.settings.share)

    def offer(self, capture_id: str) -> None:
        self._offered += 1
        try:
            self.queue.put_nowait(capture_id)
        except queue.Full:
            self._dropped += 1


def judge_process_main(config: Any, store_url: str, inbox: Any, done: Any) -> None:
    """The child: judge what arrives until None, or until the gateway that started it is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the gateway's; it stops us through the queue
    from llamaduo.deploy.capture import CaptureStore

    parent = os.getppid()
    store = CaptureStore(store_url)

    def count(status: str) -> None:
        with done.get_lock():
            done[OUTCOMES.index(status)] += 1

    judge = LiveJudge(config, LiveStore(store), on_done=count).start()
    try:
        while True:
            try:
                item = inbox.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:  # the gateway was killed: do not linger as an orphan
                    break
                continue
            if item is None:
                break
            judge.queue.put(item)
    finally:
        judge.stop()
        store.close()
