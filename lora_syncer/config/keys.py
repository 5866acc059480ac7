"""Unknown keys: the message that names the key the user probably meant (pure).

The known keys are never listed by hand: they are read from the schema that validates the
mapping (a pydantic model, field aliases first, or a `config.schema.Obj`), so adding a field
to a schema is all it takes for the key to be accepted and suggested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

from lora_syncer.config.schema import Obj

# A schema: a pydantic model class, or a `config.schema.Obj` (pydantic is never imported here:
# the adapters file's parser does not use it).
Schema = Any


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and hasattr(annotation, "model_fields")


def _model_in(annotation: Any) -> Schema | None:
    """The model a field holds, through `X | None` and `list[X]`."""
    if _is_model(annotation):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields(model: Schema) -> dict[str, Schema | None]:
    """The keys a model accepts (as written in the file) and the model each one holds, if any."""
    if isinstance(model, Obj):
        return model.written_keys()
    return {info.alias or name: _model_in(info.annotation) for name, info in model.model_fields.items()}


def _model_at(model: Schema, loc: Sequence[str | int]) -> Schema | None:
    current: Schema | None = model
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the same model
        if current is None:
            return None
        current = _fields(current).get(part)
    return current


def distance(a: str, b: str) -> int:
    """Edit distance counting a swap of two neighbours as one edit (`soruce` -> `source` is 1)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def _folded(key: str) -> str:
    # `baseModel`, `base_model` and `BaseModel` all mean `base-model`.
    return key.lower().replace("-", "").replace("_", "")


def closest(key: str, known: Sequence[str]) -> str | None:
    """The known key `key` is most likely a misspelling of, or None when none is close."""
    best: tuple[int, str] | None = None
    for candidate in known:
        a, b = _folded(key), _folded(candidate)
        if a == b:
            d = 0
        elif (a.startswith(b) or b.startswith(a)) and abs(len(a) - len(b)) <= 2:
            d = 1  # a plural or a cut-off ending: `match` for `matches`
        else:
            d = distance(key.lower(), candidate.lower())
        if best is None or d < best[0]:
            best = (d, candidate)
    if best is None or best[1] == key:
        return None
    return best[1] if best[0] <= max(1, min(3, len(key) // 3)) else None


def _homes(model: Schema, key: str) -> list[str]:
    """The keys of `model` whose own mapping (one level down) accepts `key`: where it may belong."""
    return [name for name, child in _fields(model).items() if child is not None and key in _fields(child)]


def unknown_key_message(model: Schema, loc: Sequence[str | int]) -> str:
    """The message for the unknown key at `loc` (a pydantic error location) under `model`."""
    key = loc[-1] if loc else ""
    parent = _model_at(model, loc[:-1])
    if parent is None or not isinstance(key, str):
        return "unknown key"
    known = list(_fields(parent))
    guess = closest(key, known)
    if guess is not None:
        return f"unknown key; did you mean {guess!r}?"
    homes = _homes(parent, key)
    if homes:
        return f"unknown key here; {key!r} belongs under {' or '.join(homes)} (check the indentation)"
    return f"unknown key (expected one of: {', '.join(known)})"
