"""A tiny Llama-shaped chat model for training and inference tests: built from a config in a second, with a
byte-level BPE tokenizer trained on the fly and SmolLM2's chat template (ChatML with a default system turn)."""

from __future__ import annotations

from pathlib import Path

from llamaduo.records import Example, Message

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A base model's template-less tokenizer gets ChatML from llamaduo (train.chat_template=chatml).
WORDS = "red green blue cat dog sun moon tree river stone one two three four five yes no summary answer".split()


def chats(n: int = 16, seed: int = 0) -> list[Example]:
    """Short chats whose answer is a fixed function of the prompt, so a few steps of training visibly help."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.sample(WORDS, 3)
        messages = [Message(role="user", content="repeat: " + " ".join(words)), Message(role="assistant", content=" ".join(words))]
        out.append(Example(id=Example.content_id("echo", messages) + str(i), task="echo", messages=messages))
    return out


def build_tiny_model(folder: Path, *, template: str | None = SMOLLM2_TEMPLATE, layers: int = 2, hidden: int = 64) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] if template else ["<|endoftext|>"]
    corpus = [" ".join(WORDS), "repeat: system user assistant You are a helpful assistant.", "Say hi. Hi there, friend."] * 10
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    eos = "<|im_end|>" if template else "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token=eos, pad_token=eos, unk_token="<|endoftext|>")
    if template:
        fast.chat_template = template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
