"""Log training metrics (loss, learning rate, tokens/s) into the run's event log and `metrics.jsonl`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from llamaduo.atomic import append_line


class RunMetrics(TrainerCallback):
    """A Trainer callback: every logging step becomes one `train_metrics` event and one metrics line."""

    def __init__(self, run: Any, path: Path):
        self.run = run
        self.path = path
        self._last: tuple[float, int] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = (time.perf_counter(), state.num_input_tokens_seen)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.run is None or not state.is_world_process_zero or not logs:
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, **logs}
        if self._last is not None and now > self._last[0] and "loss" in logs:
            # Tokens seen by all processes since the previous log line, over the wall time between them.
            record["tokens_per_s"] = round((tokens - self._last[1]) / (now - self._last[0]), 1)
            self._last = (now, tokens)
        record = {k: v for k, v in record.items() if isinstance(v, int | float | str | None)}
        append_line(self.path, json.dumps(record, sort_keys=True))
        self.run.event("train_metrics", **record)
