"""What a training run leaves behind: checkpoints to resume from, the adapter, the merged model and its fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from llamaduo.atomic import atomic_write_json

FINGERPRINT = "fingerprint.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def checkpoint_complete(folder: Path) -> bool:
    """Trainer writes trainer_state.json last, so a parseable one (beside weights) marks a finished checkpoint."""
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any((folder / name).is_file() for name in _WEIGHTS)


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint. Newer, incomplete ones (a kill during saving) are removed so that
    the resumed Trainer does not trip over them when it saves the same step again."""
    if not checkpoints.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p) for p in checkpoints.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))
    )
    for _, folder in reversed(found):
        if checkpoint_complete(folder):
            return folder
        shutil.rmtree(folder, ignore_errors=True)
    return None


def model_hash(folder: Path) -> str:
    """A cheap, stable identity of a model folder: its config plus the size and edges of each weight file.

    Hashing whole multi-GB weight files would cost seconds to minutes on every run; head/tail blocks and sizes
    change whenever the weights do in practice.
    """
    known = folder / FINGERPRINT
    if known.is_file():
        try:
            return str(json.loads(known.read_text(encoding="utf-8"))["id"])
        except (ValueError, KeyError):
            pass
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + path.read_bytes())
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.gguf")):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]


def config_hash(section: Any) -> str:
    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_fingerprint(out: Path, fields: dict[str, Any], *also: Path | None) -> dict[str, Any]:
    """Fingerprint = base model + data + config; its `id` names the trained model in every answer and score."""
    stable = {k: v for k, v in fields.items() if k not in ("created_at", "metrics")}
    fingerprint = {**fields, "id": hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]}
    for folder in (out, *also):
        if folder is not None and folder.is_dir():
            atomic_write_json(folder / FINGERPRINT, fingerprint)
    return fingerprint


def save_merged(base_path: Path, adapter_dir: Path, target: Path, tokenizer: Any, end_of_turn: str, dtype: Any) -> Path:
    """Load the base afresh, fold the adapter into it and save plain safetensors with tokenizer and template.

    Reloading (rather than merging the training model in place) works the same after QLoRA, DDP or a resume.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    return save_model_folder(merged, tokenizer, target, end_of_turn)


def save_model_folder(model: Any, tokenizer: Any, target: Path, end_of_turn: str) -> Path:
    """Save model + tokenizer atomically, with generation stopping at the end-of-turn token."""
    eot = tokenizer.convert_tokens_to_ids(end_of_turn)
    model.generation_config.eos_token_id = eot
    model.config.eos_token_id = eot
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.eos_token = end_of_turn
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
