"""The pre-serialized `/v1/models` body: vLLM's ModelCard shape, order, and cheap `created` refresh."""

from __future__ import annotations

import json

from lora_syncer.emulator.models_list import ModelsView
from lora_syncer.emulator.state import AdapterRegistry

PERMISSION_KEYS = {
    "id", "object", "created", "allow_create_engine", "allow_sampling", "allow_logprobs",
    "allow_search_indices", "allow_view", "allow_fine_tuning", "organization", "group", "is_blocking",
}  # fmt: skip


def view(*adapters: tuple[str, str]) -> tuple[AdapterRegistry, ModelsView]:
    reg = AdapterRegistry(["base", "alias"])
    for name, path in adapters:
        reg.add(name, path)
    return reg, ModelsView(reg, "/models/base", 256)


class TestModelsView:
    def test_shape_matches_vllm(self) -> None:
        """Base cards first (root = model, parent null), then adapters (root as sent, parent = first name)."""
        _, v = view(("a", "/x/a"), ("b", "org/b"))
        body = json.loads(v.body(now=1000.0))
        assert body["object"] == "list"
        cards = body["data"]
        assert [c["id"] for c in cards] == ["base", "alias", "a", "b"]
        assert [(c["root"], c["parent"], c["max_model_len"]) for c in cards] == [
            ("/models/base", None, 256),
            ("/models/base", None, 256),
            ("/x/a", "base", None),
            ("org/b", "base", None),
        ]
        for card in cards:
            assert list(card) == [
                "id",
                "object",
                "created",
                "owned_by",
                "root",
                "parent",
                "max_model_len",
                "permission",
            ]
            assert (card["object"], card["owned_by"], card["created"]) == ("model", "vllm", 1000)
            (perm,) = card["permission"]
            assert set(perm) == PERMISSION_KEYS
            assert perm["id"].startswith("modelperm-")
            assert (perm["object"], perm["created"], perm["organization"]) == ("model_permission", 1000, "*")

    def test_created_follows_the_clock(self) -> None:
        """Each call stamps the current second into every card."""
        _, v = view(("a", "/a"))
        first = json.loads(v.body(now=1000.9))
        second = json.loads(v.body(now=1001.0))
        assert {c["created"] for c in first["data"]} == {1000}
        assert {c["created"] for c in second["data"]} == {1001}

    def test_changes_show_up(self) -> None:
        """Loads, in-place reloads and unloads are reflected on the next call, order kept."""
        reg, v = view(("a", "/a"), ("b", "/b"))
        v.body(now=5.0)
        reg.add("a", "/a2")
        reg.add("c", "/c")
        reg.remove("b")
        cards = json.loads(v.body(now=5.0))["data"]
        assert [(c["id"], c["root"]) for c in cards[2:]] == [("a", "/a2"), ("c", "/c")]

    def test_same_second_reuses_the_body(self) -> None:
        """Within one second and without changes the same bytes are returned (no re-serialization)."""
        _, v = view(("a", "/a"))
        assert v.body(now=7.1) is v.body(now=7.5)

    def test_strings_are_escaped(self) -> None:
        """Names and paths with quotes or unicode stay valid JSON."""
        _, v = view(('we"ird', "/p\\ä"))
        cards = json.loads(v.body(now=1.0))["data"]
        assert (cards[2]["id"], cards[2]["root"]) == ('we"ird', "/p\\ä")
