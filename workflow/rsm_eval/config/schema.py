"""Validation against the JSON schema (workflow/schemas/config.schema.yaml), defaults filled.

The schema is the contract and the only place a default lives: errors name the key path
(`models.rsm-clip.weigths`) and what was expected.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import RsmEvalError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill `default`s from the schema into `instance` (jsonschema validates, it does not fill)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
            if sub.get("type") == "array" and isinstance(instance[key], list):
                for item in instance[key]:
                    _fill_defaults(item, sub.get("items", {}), root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def validate(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate against the schema; return a copy with defaults filled in."""
    if not isinstance(raw, dict):
        raise RsmEvalError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    schema = _schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            msg = err.message
            if err.validator == "additionalProperties":
                allowed = sorted(err.schema.get("properties", {}))
                msg += f" (allowed keys: {', '.join(allowed)})"
            elif err.validator == "oneOf":
                msg = "expected a path (string) or a source mapping with 'url' or 'path'"
            lines.append(f"  {_key_path(err)}: {msg}")
        raise RsmEvalError(f"{source}: invalid configuration\n" + "\n".join(lines))
    filled = copy.deepcopy(raw)
    _fill_defaults(filled, schema, schema)
    return filled
