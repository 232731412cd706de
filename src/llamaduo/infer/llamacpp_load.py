"""Open a `llama_cpp.Llama` on the load path `llamaduo.infer.native` chose; run by file path, it is that probe's child.

It imports nothing from llamaduo, so the probe child starts fast and a crash in it involves only llama.cpp.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
from typing import Any

# Long enough (about 60 tokens) that prompt processing goes through the batched matmul kernels, where AMX tiles and
# repacked weights are used, before the single-token decodes that crashed on the first report.
PROBE_PROMPT = (
    "The lighthouse keeper climbed the stairs every evening at dusk, lit the great lamp, wound the clockwork that "
    "turned the lens, and wrote the weather into a leather logbook. One night a storm came in from the west and"
)
PROBE_TOKENS = 8


@functools.cache
def _no_extra_bufts_llama() -> type:
    import llama_cpp

    class Llama(llama_cpp.Llama):
        """`Llama` that loads without extra buffer types (AMX tiles, repacked weights).

        llama-cpp-python 0.3.x builds the model params inside `__init__` and accepts unknown keywords into **kwargs
        without using them, so `Llama(..., use_extra_bufts=False)` is silently ignored. `__init__` assigns the default
        params to `self.model_params` before it loads the model: this property sets the field on that assignment.
        """

        @property
        def model_params(self):
            return self.__dict__["model_params"]

        @model_params.setter
        def model_params(self, params) -> None:
            params.use_extra_bufts = False
            self.__dict__["model_params"] = params

    return Llama


def open_llama(model_path: str, *, use_extra_bufts: bool = True, **kwargs: Any):
    """`llama_cpp.Llama(model_path, **kwargs)`, honouring `use_extra_bufts` whether or not this version's constructor has it."""
    import llama_cpp

    if use_extra_bufts:
        return llama_cpp.Llama(model_path=model_path, **kwargs)
    if "use_extra_bufts" in inspect.signature(llama_cpp.Llama.__init__).parameters:
        return llama_cpp.Llama(model_path=model_path, use_extra_bufts=False, **kwargs)
    return _no_extra_bufts_llama()(model_path=model_path, **kwargs)


def requantize_q4_0(model_path: str, out: str) -> bool:
    """Write a Q4_0 copy of the model (a fraction of a second for 135M weights); False if llama.cpp refuses."""
    import llama_cpp

    if os.path.isfile(out):
        return True
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    params.nthread = min(4, os.cpu_count() or 1)
    tmp = f"{out}.{os.getpid()}.tmp"
    ok = llama_cpp.llama_model_quantize(model_path.encode(), tmp.encode(), params) == 0
    if ok:
        os.replace(tmp, out)
    elif os.path.exists(tmp):
        os.remove(tmp)
    return ok


def decode(model_path: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Load the model with `kwargs` and decode a few greedy tokens; a crash here kills only this process."""
    started = time.perf_counter()
    # verbose: llama.cpp logs the buffer types the weights went to ("CPU_REPACK model buffer size = ..."); the parent reads them.
    llm = open_llama(model_path, n_ctx=256, n_threads=min(4, os.cpu_count() or 1), seed=0, verbose=True, **kwargs)
    loaded = time.perf_counter()
    out = llm.create_completion(PROBE_PROMPT, max_tokens=PROBE_TOKENS, temperature=0.0, top_k=1)
    done = time.perf_counter()
    result = {
        "model": os.path.basename(model_path),
        "completion_tokens": out["usage"]["completion_tokens"],
        "text": out["choices"][0]["text"],
        "use_extra_bufts": bool(llm.model_params.use_extra_bufts),
        "load_s": round(loaded - started, 3),
        "decode_s": round(done - loaded, 3),
    }
    llm.close()
    return result


def probe(model_path: str, kwargs: dict[str, Any], q4_0_copy: str | None = None) -> dict[str, Any]:
    """Decode the model, then (if `q4_0_copy` is given) a Q4_0 copy of it.

    The two cover both extra buffer types: Q4_1 weights go to AMX tiles on CPUs with AMX (the crash first reported),
    Q4_0 weights also to the repacked layout on AVX2, AVX-512 and ARM CPUs (what q4_k_m and q8_0 exports use).
    """
    runs = [decode(model_path, kwargs)]
    if q4_0_copy and requantize_q4_0(model_path, q4_0_copy):
        runs.append({**decode(q4_0_copy, kwargs), "model": "its Q4_0 copy"})
    return {"ok": all(r["completion_tokens"] > 0 for r in runs), "completion_tokens": sum(r["completion_tokens"] for r in runs), "runs": runs}


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print("usage: llamacpp_load.py MODEL.gguf '<json Llama kwargs>' [Q4_0_COPY.gguf]", file=sys.stderr)
        return 2
    result = probe(argv[1], json.loads(argv[2]), argv[3] if len(argv) == 4 else None)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
