"""Structured replies: a schema (pydantic class or JSON-schema dict) to send, and the validation of what came back."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Schema:
    name: str
    json_schema: dict[str, Any]
    model: type[BaseModel] | None = None


def as_schema(schema: Any) -> Schema | None:
    if schema is None:
        return None
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return Schema(_safe_name(schema.__name__), schema.model_json_schema(), schema)
    if isinstance(schema, dict):
        check_json_schema(schema)
        return Schema(_safe_name(str(schema.get("title", "reply"))), schema)
    raise TypeError(f"schema must be a pydantic model class or a JSON-schema dict, not {type(schema).__name__}")


def _safe_name(name: str) -> str:
    """Providers accept only [a-zA-Z0-9_-] in schema/tool names."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64] or "reply"


def extract_json(text: str) -> Any:
    """Parse the JSON in a reply, tolerating ```json fences and prose around one object."""
    fenced = _FENCE.search(text)
    candidate = (fenced.group(1) if fenced else text).strip()
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as first_error:
        start, end = candidate.find("{"), candidate.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(candidate[start : end + 1])
            except json.JSONDecodeError:
                pass
        raise ValueError(f"reply is not valid JSON ({first_error.msg} at char {first_error.pos})") from None


def validate(text: str, schema: Schema) -> Any:
    """The parsed object, or ValueError saying what is wrong (sent back in the repair request)."""
    data = extract_json(text)
    if schema.model is not None:
        try:
            return schema.model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in exc.errors()[:5])
            raise ValueError(f"reply does not match the schema: {problems}") from None
    _check_dict_schema(data, schema.json_schema)
    return data


def check_json_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError naming the problem when `schema` is not a valid JSON schema (checked once per schema)."""
    _validator(json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    """A checked, compiled validator per distinct schema (keyed by its JSON text, since dicts are not hashable)."""
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"the schema is not a valid JSON schema: {exc.message}") from None
    return cls(schema)


def _check_dict_schema(data: Any, schema: dict[str, Any]) -> None:
    """The full JSON-schema check ($ref, items, bounds, additionalProperties, ...), naming the first few problems."""
    import jsonschema

    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = sorted(validator.iter_errors(data), key=jsonschema.exceptions.relevance)
    if errors:
        problems = "; ".join(f"{_where(e.absolute_path)}: {e.message}" for e in errors[:5])
        raise ValueError(f"reply does not match the schema: {problems}")


def _where(path: Any) -> str:
    return "reply" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def repair_messages(messages: list[dict[str, Any]], bad_reply: str, problem: str, schema: Schema) -> list[dict[str, Any]]:
    """The one repair request: the conversation, the bad reply, and what was wrong with it."""
    return [
        *messages,
        {"role": "assistant", "content": bad_reply},
        {
            "role": "user",
            "content": (
                f"Your reply could not be used: {problem}. Reply again with only a JSON object that matches this "
                f"JSON schema, no prose and no code fences:\n{json.dumps(schema.json_schema, ensure_ascii=False)}"
            ),
        },
    ]

