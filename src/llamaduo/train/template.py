"""Chat template handling: the model's own template (with `{% generation %}` markers added) or ChatML.

The loss must cover the assistant's end-of-turn token, or the model never learns to stop. TRL masks the loss
from the template's generation markers, so we place them around the assistant content *and* the end-of-turn token.
The markers render to nothing, so the saved (marker-free) template produces exactly the text the model trained on.
Tool calls render through engines/tools.py (the template's own tool support, else the fallback format in the
content); `check_tool_loss_mask` makes sure the calls are inside the loss before any training on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llamaduo.errors import LlamaduoError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")

_MARKER = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")
_EXPRESSION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.S)
_CONTENT = re.compile(r"""message(?:\[\s*['"]content['"]\s*\]|\.content)""")
_PROBE = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there, friend."}]


@dataclass
class ChatTemplate:
    """The template to save with the model, the marked one to train with, and the end-of-turn token."""

    inference: str
    training: str
    end_of_turn: str
    added_tokens: list[str] = field(default_factory=list)


def strip_generation_markers(template: str) -> str:
    return _MARKER.sub("", template)


def add_generation_markers(template: str) -> str | None:
    """Wrap `message['content'] + <end of turn>` of assistant messages in `{% generation %}` markers.

    Works for the common shape where one `{{ ... }}` expression prints header + content + footer, as in
    SmolLM2, ChatML, Zephyr, Mistral and many others. Returns None when no such expression exists.
    """
    changed = False

    def mark(match: re.Match[str]) -> str:
        nonlocal changed
        left, body, right = match.groups()
        found = _CONTENT.search(body)
        if not found:
            return match.group(0)
        head = body[: found.start()].strip()
        if head and not head.endswith("+"):
            return match.group(0)  # content is wrapped in a filter or call: leave it alone
        head = head[:-1].strip() if head else ""
        tail = body[found.start() :].strip()
        changed = True
        marked = ("{{" + left + " " + head + " }}" if head else "") + "{% generation %}{{ " + tail + " " + right + "}}{% endgeneration %}"
        return "{% if message['role'] == 'assistant' %}" + marked + "{% else %}" + match.group(0) + "{% endif %}"

    result = _EXPRESSION.sub(mark, template)
    return result if changed else None


def prepare_chat_template(tokenizer: Any, mode: str) -> ChatTemplate:
    """Set up the tokenizer's template for training; returns what to save and what to train with."""
    added: list[str] = []
    if mode == "chatml":
        missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
            added = missing
        base = CHATML_TEMPLATE
    else:
        base = tokenizer.chat_template
        if isinstance(base, dict):
            base = base.get("default")
        if not base:
            raise LlamaduoError(
                "the base model's tokenizer has no chat template",
                "Set train.chat_template=chatml (ChatML, as for base models) or use an instruct model.",
            )
    inference = strip_generation_markers(base)
    training = base if _MARKER.search(base) else _known_training_template(tokenizer, base) or add_generation_markers(base)
    if training is None:
        raise LlamaduoError(
            "cannot find where the chat template prints the assistant's answer, so the loss cannot be limited to it",
            "Set train.chat_template=chatml, or train.assistant_only_loss=false to train on whole conversations.",
        )
    end_of_turn = find_end_of_turn(tokenizer, inference)
    check_loss_mask(tokenizer, training, end_of_turn)
    tokenizer.chat_template = inference
    return ChatTemplate(inference=inference, training=training, end_of_turn=end_of_turn, added_tokens=added)


def _known_training_template(tokenizer: Any, template: str) -> str | None:
    """TRL ships hand-written training templates for Llama 3, Qwen, Gemma, Phi...; prefer those where they match."""
    from trl.chat_template_utils import get_training_chat_template

    saved = tokenizer.chat_template
    try:
        tokenizer.chat_template = template
        return get_training_chat_template(tokenizer)
    except ValueError:
        return None
    finally:
        tokenizer.chat_template = saved


def find_end_of_turn(tokenizer: Any, template: str) -> str:
    """The special token the template prints right after an assistant answer (<|im_end|>, <|eot_id|>, </s>...)."""
    answer = _PROBE[-1]["content"]
    text = tokenizer.apply_chat_template(_PROBE, chat_template=template, tokenize=False)
    tail = text[text.rfind(answer) + len(answer) :]
    specials = sorted(set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab()), key=len, reverse=True)
    for token in specials:
        if token and tail.lstrip().startswith(token):
            return token
    if tokenizer.eos_token and tokenizer.eos_token in tail:
        return tokenizer.eos_token
    raise LlamaduoError(
        "the chat template prints no end-of-turn token after an assistant answer, so the model could not learn to stop",
        "Set train.chat_template=chatml.",
    )


def check_loss_mask(tokenizer: Any, training_template: str, end_of_turn: str) -> None:
    """Render a probe chat and make sure the loss mask covers the answer and its end-of-turn token."""
    out = tokenizer.apply_chat_template(
        _PROBE, chat_template=training_template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = out["input_ids"]
    masked = [i for i, m in zip(ids, out["assistant_masks"], strict=False) if m]
    eot_id = tokenizer.convert_tokens_to_ids(end_of_turn)
    if _PROBE[-1]["content"] not in tokenizer.decode(masked) or eot_id not in masked:
        raise LlamaduoError(
            "the chat template's generation markers leave the answer or its end-of-turn token out of the loss",
            "Set train.chat_template=chatml, or fix the {% generation %} markers in the template.",
        )


def loss_mask(tokenizer: Any, training_template: str, messages: list[dict[str, Any]], **extra: Any) -> tuple[list[int], list[int]]:
    """Token ids and the 0/1 loss mask TRL will use for one chat (for tests and inspection); `extra`: e.g. tools."""
    out = tokenizer.apply_chat_template(
        messages, chat_template=training_template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **extra
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


_TOOL_PROBE_TOOLS = [{"type": "function", "function": {
    "name": "lookup_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}}]
_TOOL_PROBE = [
    {"role": "user", "content": "Weather in Quito?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "lookup_weather", "arguments": '{"city": "Quito"}'}}]},
    {"role": "tool", "content": "RESULT_ZETA", "tool_call_id": "call_0"},
    {"role": "assistant", "content": "Mild today."},
]


def check_tool_loss_mask(tokenizer: Any, template: ChatTemplate) -> str:
    """Render a probe chat with a tool call and its result; the loss must cover the call (name and arguments) and the
    final answer, each with its end-of-turn token, and leave out the tool's result. Returns `native` or `fallback`."""
    from llamaduo.infer.engines.tools import prepare_chat, tool_format

    messages, extra = prepare_chat(_TOOL_PROBE, _TOOL_PROBE_TOOLS, template.inference)
    ids, mask = loss_mask(tokenizer, template.training, messages, **extra)
    learned = tokenizer.decode([i for i, m in zip(ids, mask, strict=False) if m])
    eot = tokenizer.convert_tokens_to_ids(template.end_of_turn)
    ends = sum(1 for i, m in zip(ids, mask, strict=False) if m and i == eot)
    if "lookup_weather" not in learned or "Quito" not in learned or "Mild today." not in learned or "RESULT_ZETA" in learned or ends < 2:
        raise LlamaduoError(
            "the chat template's generation markers leave the tool calls (or their end-of-turn token) out of the loss",
            "Set train.chat_template=chatml (tools then use the documented fallback format), or add {% generation %} markers around the template's tool calls.",
        )
    return "native" if tool_format(template.inference).native else "fallback"
