"""A deliberately degraded model for the migration loop's tests: the tiny model with its weights perturbed by seeded
noise, as a broken quantization or a bad checkpoint would leave it. Loaded through the engine registry's `module:Class`.
"""

from __future__ import annotations

import time

import torch

from llamaduo.infer.engines.hf import TransformersEngine


class DegradedEngine(TransformersEngine):
    def __init__(self, spec):
        super().__init__(spec)
        self.delay = float(spec.options.get("token_delay_s", 0.0))
        generator = torch.Generator().manual_seed(int(spec.options.get("noise_seed", 1)))
        scale = float(spec.options.get("noise", 5.0))  # 0.5-2 std leave the tiny model's greedy answers unchanged
        with torch.no_grad():
            for param in self.model.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * scale * param.std().clamp(min=1e-3))

    def generate(self, params):
        for step in super().generate(params):
            if self.delay:
                time.sleep(self.delay)
            yield step
