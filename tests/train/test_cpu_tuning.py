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

