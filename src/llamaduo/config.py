"""The project config: one YAML file (`llamaduo.yaml`) validated by one pydantic model per stage.

Loading applies `${VAR}` interpolation, then `--set section.key=value` overrides, then validation.
Unknown keys are errors that suggest the closest valid key.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from llamaduo.configbase import Section
from llamaduo.data.config import DataConfig
from llamaduo.deploy.config import DeployConfig
from llamaduo.errors import ConfigError
from llamaduo.evaluate.config import EvalConfig
from llamaduo.infer.config import InferConfig
from llamaduo.loop.config import LoopConfig
from llamaduo.report.config import ReportConfig
from llamaduo.service.config import ServiceConfig
from llamaduo.synth.config import SynthConfig
from llamaduo.train.config import TrainConfig

DEFAULT_CONFIG_NAME = "llamaduo.yaml"
SECRET_FIELD = re.compile(r"(api_?keys?|token|secret|password)$", re.IGNORECASE)


class ProjectConfig(Section):
    """Where the project keeps its files."""

    name: str = "llamaduo"
    """A name for the project, used in run ids and model cards."""
    workdir: str = "."
    """Project folder (relative to the config file) holding data/, runs/ and .llamaduo/."""
    runs_dir: str = "runs"
    """Folder of run folders, relative to the project folder."""
    seed: int = 42
    """Global seed, recorded in every manifest."""


class Config(Section):
    """The whole llamaduo.yaml."""

    project: ProjectConfig = Field(default_factory=ProjectConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        """The folder of the config file; relative paths resolve against it."""
        return self._base_dir

    @property
    def workdir(self) -> Path:
        return (self._base_dir / self.project.workdir).resolve()

    def path(self, relative: str | os.PathLike[str]) -> Path:
        """Resolve a path from the config against the project folder."""
        p = Path(os.path.expanduser(str(relative)))
        return p if p.is_absolute() else self.workdir / p

    def redacted(self) -> dict[str, Any]:
        """The resolved config as plain data, safe to print or write into a manifest."""
        return redact(self.model_dump(mode="json"))


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    data: dict[str, Any] | None = None,
    required: bool = False,
) -> Config:
    """Load, interpolate, override and validate a config.

    `path=None` looks for `$LLAMADUO_CONFIG`, then `./llamaduo.yaml`; if neither exists the defaults
    are used unless `required`. `data` gives the raw mapping directly (the Python API).
    """
    base_dir = Path.cwd()
    if data is None:
        cfg_path = _find_config(path)
        if cfg_path is None:
            if required or path is not None:
                where = path or DEFAULT_CONFIG_NAME
                raise ConfigError(f"config file {where} not found", "Run `llamaduo init` to create one, or pass --config PATH.")
            raw: dict[str, Any] = {}
        else:
            raw = _read_yaml(cfg_path)
            base_dir = cfg_path.parent.resolve()
    else:
        raw = dict(data)
    raw = interpolate_env(raw)
    for item in overrides:
        apply_override(raw, item)
    config = validate(raw)
    config._base_dir = base_dir
    return config


def validate(raw: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(*_explain(exc)) from None


def _find_config(path: str | os.PathLike[str] | None) -> Path | None:
    candidates = [path] if path is not None else [os.environ.get("LLAMADUO_CONFIG"), DEFAULT_CONFIG_NAME]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", "Save the config as UTF-8.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}", "Fix the YAML syntax (indentation, quotes, colons).") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, not a {type(raw).__name__}", "Start from `llamaduo init`.")
    return raw


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(value: Any, where: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of the config."""
    if isinstance(value, dict):
        return {k: interpolate_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where} refers to ${{{name}}}, which is not set", f"Export {name} or write ${{{name}:-default}}.")

        return _ENV_REF.sub(substitute, value)
    return value


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `section.key=value` override; the value is parsed as a YAML scalar or list."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form section.key=value", "Write e.g. --set train.epochs=2.")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, parts[: i + 1])
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        node = child
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, parts)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {key!r}: {'.'.join(parts[:-1])} is a value, not a section", "Check the key path.")


def _list_item(node: list[Any], part: str, path: list[str]) -> Any:
    index = _list_index(node, part, path)
    if not isinstance(node[index], dict):
        node[index] = {}
    return node[index]


def _list_index(node: list[Any], part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override path {'.'.join(path)}: no item {part} in a list of {len(node)}", "Use an index from 0.")
    return int(part)


def redact(value: Any, key: str = "") -> Any:
    """Blank out values of secret-looking keys (api_key, token, password...)."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value and SECRET_FIELD.search(key) and not key.endswith("_env"):
        return "***"
    return value


# ---- error explanations -------------------------------------------------------------------------


def _explain(exc: ValidationError) -> tuple[str, str]:
    """Turn pydantic's first error into one line naming the key and the fix."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc)
    more = f" (and {exc.error_count() - 1} more problem{'s' if exc.error_count() > 2 else ''})" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        valid = _fields_at(Config, loc[:-1])
        close = closest(loc[-1], valid)
        hint = f"Did you mean `{'.'.join(loc[:-1] + [close])}`?" if close else f"Valid keys here: {', '.join(sorted(valid))}."
        return f"unknown config key `{dotted}`{more}", hint
    if err["type"] == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"`{dotted}` is {err.get('input')!r}, not one of {expected}{more}", "Pick one of the listed values."
    msg = err["msg"]
    given = err.get("input")
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    return f"`{dotted}`: {msg}{shown}{more}", "See docs/config.md for the valid values."


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option nearest to a typo: fewest edits (a swap of two letters counts as one), then difflib."""
    scored = [(_edit_distance(word.lower(), o.lower()), abs(len(o) - len(word)), -difflib.SequenceMatcher(None, word, o).ratio(), o) for o in options]
    if not scored:
        return None
    distance, _, _, best = min(scored)
    return best if distance <= max(2, len(word) // 3) else None


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _fields_at(model: type[BaseModel], loc: Iterable[str]) -> list[str]:
    """The valid keys of the section that `loc` points at."""
    current: Any = model
    for part in loc:
        if part.isdigit():  # an index into a list of sections
            continue
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return []
            current = field.annotation
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """Reach the model class inside Optional[...], list[...] and dict[str, ...]."""
    for _ in range(5):
        origin = typing.get_origin(tp)
        if origin in (list, tuple, set, dict) or origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else (args[-1] if args else tp)
        else:
            break
    return tp
