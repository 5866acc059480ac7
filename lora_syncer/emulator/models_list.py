"""The `GET /v1/models` body, pre-serialized so 10,000 adapters cost one join per call.

Each card is stored as byte fragments around its two `created` fields (card and permission);
the list is re-assembled only when the registry's version changes, and the final body is reused
while `created` (whole seconds, like vLLM's `int(time.time())`) stays the same.
"""

from __future__ import annotations

import secrets
import time

from lora_syncer.emulator import _json
from lora_syncer.emulator.state import AdapterRegistry

Card = tuple[bytes, bytes, bytes]  # fragments around the two `created` values


def _permission_id() -> str:
    return "modelperm-" + secrets.token_hex(8)


def build_card(model_id: str, root: str, parent: str | None, max_model_len: int | None) -> Card:
    """One ModelCard as vLLM serializes it, split where `created` goes."""
    head = b'{"id":' + _json.dumps(model_id) + b',"object":"model","created":'
    middle = (
        b',"owned_by":"vllm","root":'
        + _json.dumps(root)
        + b',"parent":'
        + _json.dumps(parent)
        + b',"max_model_len":'
        + _json.dumps(max_model_len)
        + b',"permission":[{"id":'
        + _json.dumps(_permission_id())
        + b',"object":"model_permission","created":'
    )
    tail = (
        b',"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,'
        b'"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,'
        b'"organization":"*","group":null,"is_blocking":false}]}'
    )
    return head, middle, tail


class ModelsView:
    """Serves the `/v1/models` body for a registry, rebuilding only what changed."""

    def __init__(self, registry: AdapterRegistry, model_root: str, max_model_len: int) -> None:
        self._registry = registry
        self._base_cards = [build_card(n, model_root, None, max_model_len) for n in registry.served_names]
        self._cards: dict[str, tuple[str, Card]] = {}  # name -> (path it was built for, card)
        self._parts: list[bytes] = []
        self._parts_version = -1
        self._body = b""
        self._body_key: tuple[int, int] = (-1, -1)

    def _card(self, name: str, path: str) -> Card:
        cached = self._cards.get(name)
        if cached is not None and cached[0] == path:
            return cached[1]
        card = build_card(name, path, self._registry.served_names[0], None)
        self._cards[name] = (path, card)
        return card

    def _rebuild_parts(self) -> None:
        adapters = self._registry.adapters
        for stale in self._cards.keys() - adapters.keys():
            del self._cards[stale]
        cards = [*self._base_cards, *(self._card(n, p) for n, p in adapters.items())]
        # parts joined with the created value give the whole body
        parts: list[bytes] = []
        pending = b'{"object":"list","data":['
        for i, (head, middle, tail) in enumerate(cards):
            parts.append(pending + (b"," if i else b"") + head)
            parts.append(middle)
            pending = tail
        parts.append(pending + b"]}")
        self._parts = parts
        self._parts_version = self._registry.version

    def body(self, now: float | None = None) -> bytes:
        """The serialized `{"object":"list","data":[...]}` with `created` set to now."""
        created = int(time.time() if now is None else now)
        version = self._registry.version
        if self._body_key == (version, created):
            return self._body
        if self._parts_version != version:
            self._rebuild_parts()
        self._body = str(created).encode().join(self._parts)
        self._body_key = (version, created)
        return self._body
