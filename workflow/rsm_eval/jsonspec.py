"""One JSON serialisation for the small dataclasses passed from a rule to its stage.

The plan (rsm_eval.plan) writes a spec with `to_json()`; the stage's command line reads it
back with the same class's `from_json()`, so the two sides cannot drift apart. Keys are
sorted (a rule's parameter, hence Snakemake's rerun trigger, is stable); an unknown or
missing key is an error naming the class and the key.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Self

from .errors import RsmEvalError


class JsonSpec:
    """Mixin for frozen dataclasses whose fields are JSON values (or JsonSpec classes, read
    back by `_nested`)."""

    # field name -> JsonSpec class, or (JsonSpec class, "list" | "dict"), for nested specs
    _nested: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, where: str | None = None) -> Self:
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise RsmEvalError(f"{where}: expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise RsmEvalError(
                f"{where}: unknown key(s) {', '.join(unknown)} (expected: {', '.join(fields)})"
            )
        missing = [
            n
            for n, f in fields.items()
            if n not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise RsmEvalError(f"{where}: missing key(s) {', '.join(missing)}")
        values = dict(data)
        for name, f in fields.items():  # JSON has no tuples: read a tuple field back as one
            if isinstance(values.get(name), list) and str(f.type).startswith("tuple"):
                values[name] = tuple(values[name])
        for name, kind in cls._nested.items():
            value = values.get(name)
            if value is None:
                continue
            sub, shape = kind if isinstance(kind, tuple) else (kind, "one")
            at = f"{where}.{name}"
            if shape == "list":
                values[name] = tuple(sub.from_dict(v, f"{at}.{i}") for i, v in enumerate(value))
            elif shape == "dict":
                values[name] = {k: sub.from_dict(v, f"{at}.{k}") for k, v in value.items()}
            else:
                values[name] = sub.from_dict(value, at)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RsmEvalError(f"{cls.__name__}: not JSON ({exc})") from None
        return cls.from_dict(data)
