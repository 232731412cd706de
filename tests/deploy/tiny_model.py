"""A tiny Llama-shaped chat model saved like a trained run's merged/ folder: safetensors, tokenizer with a ChatML
template, and a generation_config whose eos is the end-of-turn token."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    '{"verdict": "yes", "ok": true, "score": 3} {"verdict": "no", "ok": false}',
    "Summarize the text. Answer the question. Classify the review as positive or negative.",
    "hello world, this is a tiny tokenizer trained for llamaduo deployment tests 0123456789",
] * 20


def build_tiny_chat_model(folder: Path, context: int = 256) -> Path:
    """`context`: max_position_embeddings (rotary, so it costs no weights; tool prompts need more than 256)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=context, bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"), pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def build_tiny_smol_model(folder: Path, *, seed: int = 0) -> Path | None:
    """A tiny Llama with SmolLM2's real tokenizer and chat template, so llama.cpp's converter recognises the tokenizer.

    Weights are drawn narrow (std 0.05): wide random weights make near-tied logits that f16 rounding flips, which
    a trained model does not have; narrow ones give stable (if repetitive) greedy answers.
    Returns None when the SmolLM2 tokenizer cannot be resolved offline.
    """
    import shutil

    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    try:
        from llamaduo.train.base_model import resolve_base_model

        base = resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    except Exception:
        return None
    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(seed)
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=end_of_turn,
        pad_token_id=end_of_turn, tie_word_embeddings=True, initializer_range=0.05,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=end_of_turn, pad_token_id=end_of_turn, bos_token_id=tok.bos_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (base / name).is_file():
            shutil.copy(base / name, folder / name)
    return folder


def teach_tiny_model(folder: Path, out: Path, texts: list[str], *, steps: int = 150, lr: float = 1e-2) -> Path:
    """Overfit a tiny model on `texts` (whole rendered chats) so that greedy decoding repeats their answers; saved to
    `out`. A real model that learned one call format, to show serve what a trained model does.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    batch = [torch.tensor([tok(t, add_special_tokens=False)["input_ids"]]) for t in texts]
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains ~100x faster on one thread than on cores other work shares
    try:
        model.train()
        for step in range(steps):
            ids = batch[step % len(batch)]
            model(input_ids=ids, labels=ids).loss.backward()
            optim.step()
            optim.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
