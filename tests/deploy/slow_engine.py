"""A real transformers engine that takes its time (and can ignore end-of-turn), so a test can kill its worker mid-answer.

Loaded in the serve worker through the engine registry's `module:Class` form, exactly as a user's own engine would be.
"""

from __future__ import annotations

import time

from llamaduo.infer.engines.hf import TransformersEngine


class SlowEngine(TransformersEngine):
    def __init__(self, spec):
        super().__init__(spec)
        self.delay = float(spec.options.get("token_delay_s", 0.05))
        if spec.options.get("ignore_eos"):
            self.eos_ids = []

    def generate(self, params):
        for step in super().generate(params):
            time.sleep(self.delay)
            yield step
