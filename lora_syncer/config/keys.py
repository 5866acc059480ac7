"""Unknown keys: the message that names the key the user probably meant (pure).

The known keys are never listed by hand: they are read from the pydantic model that
validates the mapping (field aliases first), so adding a field to a schema is all it takes
for the key to be accepted and suggested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

from pydantic import BaseModel


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, through `X | None` and `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """The keys a model accepts (as written in the file) and the model each one holds, if any."""
    return {info.alias or name: _model_in(info.annotation) for name, info in model.model_fields.items()}


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
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


def _homes(model: type[BaseModel], key: str) -> list[str]:
    """The keys of `model` whose own mapping (one level down) accepts `key`: where it may belong."""
    return [name for name, child in _fields(model).items() if child is not None and key in _fields(child)]


def unknown_key_message(model: type[BaseModel], loc: Sequence[str | int]) -> str:
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
