"""CPU tuning chosen at run time is applied and recorded in the settings the run's fingerprint stores."""

from __future__ import annotations

import platform
import sys

import pytest

from llamaduo.config import load_config
from llamaduo.train.device import apply_device_settings, device_settings, tune_cpu_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_allocator_is_tuned_and_recorded() -> None:
    settings = device_settings(load_config(data={}).train)
    assert settings.allocator == "default"  # nothing process-wide happens until training applies it
    applied = apply_device_settings(settings)
    if settings.use_cpu:
        assert applied.allocator == "glibc-heap-kept"
        assert applied.model_dump()["allocator"] == "glibc-heap-kept"
    assert applied.sampler == "group_by_length"
    assert tune_cpu_allocator() == "glibc-heap-kept"



def test_cpu_tuning_off_gives_plain_trl_choices(tmp_path, tiny_model) -> None:
    """`train.cpu_tuning: false` is the measured baseline of benchmarks/train_infer.py: every run-time choice is off."""
    from llamaduo.runs import RunFolder
    from llamaduo.train.dataset import conversations
    from llamaduo.train.trainer import _build_trainer
    from tests.tiny import chats
    from tests.train.conftest import tiny_config

    for tuning in (False, True):
        config = tiny_config(tmp_path / str(tuning), tiny_model, cpu_tuning=tuning)
        settings = device_settings(config.train)
        if not settings.use_cpu:
            pytest.skip("CPU-only choices")
        assert settings.sampler == ("group_by_length" if tuning else "random")
        run = RunFolder.create(tmp_path / str(tuning) / "runs", config, run_id="r")
        trainer, _, _, built = _build_trainer(config, conversations(chats(8)), tiny_model, settings, tmp_path / str(tuning) / "out", run, None)
        assert built.loss_head == ("labelled-positions" if tuning else "trl-fused")
        assert built.lora_dropout == ("packed-bits" if tuning else "torch")
        dropouts = {type(d).__name__ for m in trainer.model.modules() if hasattr(m, "lora_dropout") for d in m.lora_dropout.values()}
        assert dropouts == ({"PackedBitsDropout"} if tuning else {"Dropout"})
        assert trainer.args.train_sampling_strategy == settings.sampler
