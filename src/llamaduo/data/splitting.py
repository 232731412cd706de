"""`llamaduo data split`: a seeded, task-stratified train/test split whose test part is frozen once made.

Tasks already in the frozen test split keep their test items forever; a task seen for the first time
gets its own test items (the freeze record is extended). Train data is deduplicated and decontaminated.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from pydantic import BaseModel, Field

from llamaduo.config import Config
from llamaduo.data.hygiene import PairFilter
from llamaduo.data.store import DatasetStore
from llamaduo.errors import LlamaduoError
from llamaduo.records import Example


class SplitReport(BaseModel):
    train_version: str
    test_version: str
    test_hash: str
    new_test_tasks: list[str] = Field(default_factory=list)
    """Tasks whose test items were drawn by this split (empty when the frozen test split was reused as is)."""
    tasks: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Per task: raw, test and train counts."""
    dropped: dict[str, int] = Field(default_factory=dict)
    """Train rows removed by dedup and decontamination, by reason."""


def shuffled(examples: list[Example], seed: int, task: str) -> list[Example]:
    """A seeded order that depends only on content ids, not on the order rows were ingested in."""
    ordered = sorted(examples, key=lambda e: e.id)
    random.Random(f"{seed}:{task}").shuffle(ordered)
    return ordered


def split(config: Config) -> SplitReport:
    """Freeze (or reuse) the per-task test split and write a clean train version."""
    store = DatasetStore(config.path(config.data.store))
    raw_version = store.latest("raw")
    raw = store.examples("raw")
    if not raw:
        raise LlamaduoError("the dataset has no raw rows yet", "Run `llamaduo data ingest FILE --task NAME` first.")
    test: list[Example] = []
    if store.test_hash() is not None:
        store.check_test_frozen()
        test = store.examples("test")
    by_task: dict[str, list[Example]] = defaultdict(list)
    for example in raw:
        by_task[example.task].append(example)
    frozen_tasks = {e.task for e in test}
    size = config.data.test_size
    new_tasks = sorted(t for t in by_task if t not in frozen_tasks)
    for task in new_tasks:
        rows = by_task[task]
        if len(rows) <= size:
            raise LlamaduoError(
                f"task {task!r} has {len(rows)} rows, not enough for {size} test items plus training data",
                "Ingest more rows for it, or lower data.test_size.",
            )
        test.extend(shuffled(rows, config.data.split_seed, task)[:size])
    test_version = store.latest("test")
    if new_tasks:
        test_version = store.freeze_test(test, parents=[raw_version] if raw_version else [], extra={"seed": config.data.split_seed, "test_size": size})
    test_ids = {e.id for e in test}
    candidates = [e for e in raw if e.id not in test_ids]
    gate = PairFilter(config.data, test)
    dropped: Counter[str] = Counter()
    train = []
    for example, verdict in zip(candidates, gate.screen(candidates), strict=True):
        if verdict is None:
            train.append(example)
        else:
            dropped[verdict.reason] += 1
    if not train:
        raise LlamaduoError("no training rows are left after the test split and dedup", "Ingest more data or lower data.test_size.")
    train_version = store.write(
        "train", train, stage="split", parents=[v for v in (raw_version, test_version) if v], extra={"dropped": dict(dropped)}
    )
    counts = {
        task: {"raw": len(rows), "test": sum(e.task == task for e in test), "train": sum(e.task == task for e in train)}
        for task, rows in sorted(by_task.items())
    }
    return SplitReport(
        train_version=train_version,
        test_version=str(test_version),
        test_hash=store.check_test_frozen(),
        new_test_tasks=new_tasks,
        tasks=counts,
        dropped=dict(sorted(dropped.items())),
    )
