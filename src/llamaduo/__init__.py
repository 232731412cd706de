"""llamaduo: move an application from a paid service LLM to a small local model it fine-tunes, judges and deploys."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import llamaduo` (and the CLI's start-up) does not pull in the heavy stages.
    if name == "Pipeline":
        from llamaduo.loop.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'llamaduo' has no attribute {name!r}")
