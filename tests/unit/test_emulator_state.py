"""The emulator's adapter registry rules and adapter probing, checked against vLLM 0.32's wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_syncer.emulator.errors import sanitize_message
from lora_syncer.emulator.state import AdapterRegistry, looks_like_hub_id, probe_adapter


def write_adapter(root: Path, name: str, rank: int = 8, **extra: object) -> Path:
    path = root / name
    path.mkdir()
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        **extra,
    }
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


class TestAdapterRegistry:
    def test_load_checks_empty_fields_first(self) -> None:
        """An empty name or path is refused before any other check."""
        reg = AdapterRegistry(["base"])
        for name, path in (("", "/p"), ("x", ""), ("base", "")):
            err = reg.check_load(name, path, load_inplace=False)
            assert err is not None
            assert (err.status, err.type, err.message) == (
                400,
                "InvalidUserInput",
                "Both 'lora_name' and 'lora_path' must be provided.",
            )

    def test_name_of_a_served_model_conflicts(self) -> None:
        """A name equal to any served base name (aliases too) is a 400 conflict, even in place."""
        reg = AdapterRegistry(["base", "alias"])
        err = reg.check_load("alias", "/p", load_inplace=True)
        assert err is not None
        assert err.status == 400
        assert err.message == "The lora adapter 'alias' conflicts with a served base model."

    def test_already_loaded_without_inplace(self) -> None:
        """Loading a registered name again without load_inplace gives vLLM's 400 hint."""
        reg = AdapterRegistry(["base"])
        reg.add("a", "/p1")
        err = reg.check_load("a", "/p2", load_inplace=False)
        assert err is not None
        assert err.status == 400
        assert err.message == (
            "The lora adapter 'a' has already been loaded. If you want to load the adapter in place, "
            "set 'load_inplace' to True."
        )
        assert reg.check_load("a", "/p2", load_inplace=True) is None

    def test_inplace_keeps_position_and_swaps_path(self) -> None:
        """Re-pointing a registered adapter keeps its place in load order and bumps the version."""
        reg = AdapterRegistry(["base"])
        reg.add("a", "/a")
        reg.add("b", "/b")
        version = reg.version
        reg.add("a", "/a2")
        assert list(reg.adapters.items()) == [("a", "/a2"), ("b", "/b")]
        assert reg.version > version

    def test_unload_rules(self) -> None:
        """Unload needs a name and a registered adapter, with vLLM's messages."""
        reg = AdapterRegistry(["base"])
        empty = reg.check_unload("")
        assert empty is not None
        assert (empty.status, empty.message) == (
            400,
            "'lora_name' needs to be provided to unload a LoRA adapter.",
        )
        unknown = reg.check_unload("zzz")
        assert unknown is not None
        assert (unknown.status, unknown.type, unknown.message) == (
            404,
            "NotFoundError",
            "The lora adapter 'zzz' cannot be found.",
        )
        reg.add("zzz", "/z")
        assert reg.check_unload("zzz") is None
        reg.remove("zzz")
        assert reg.adapters == {}

    def test_served_model_names_the_answer(self) -> None:
        """Base aliases and a missing model are answered by the first served name; adapters by their own."""
        reg = AdapterRegistry(["base", "alias"])
        reg.add("a", "/a")
        assert reg.served_model(None) == "base"
        assert reg.served_model("") == "base"
        assert reg.served_model("alias") == "base"
        assert reg.served_model("a") == "a"
        assert reg.served_model("nope") is None

    def test_unknown_model_error_lists_aliases(self) -> None:
        """The 404 for an unknown model names the parameter and lists the base names."""
        err = AdapterRegistry(["base", "alias"]).unknown_model_error("nope")
        assert err.body() == {
            "error": {
                "message": "The model `nope` does not exist. Valid aliases: base, alias.",
                "type": "NotFoundError",
                "param": "model",
                "code": 404,
            }
        }

    def test_clear_forgets_everything(self) -> None:
        """clear() forgets every adapter, as a restart does."""
        reg = AdapterRegistry(["base"])
        reg.add("a", "/a")
        reg.clear()
        assert reg.adapters == {}

    def test_needs_a_served_name(self) -> None:
        """A registry without a base model name is a programming error."""
        with pytest.raises(ValueError, match="served model name"):
            AdapterRegistry([])


class TestProbeAdapter:
    def probe(
        self, path: str, name: str = "x", max_rank: int = 16, hub: bool = True
    ) -> tuple[int, str] | None:
        err = probe_adapter(name, path, max_lora_rank=max_rank, allow_hub_ids=hub)
        return None if err is None else (err.status, err.body()["error"]["message"])

    def test_good_local_adapter(self, tmp_path: Path) -> None:
        """A directory with a valid adapter_config.json within the rank limit loads."""
        assert self.probe(str(write_adapter(tmp_path, "a"))) is None

    def test_missing_directory_is_404_with_path_scrubbed(self, tmp_path: Path) -> None:
        """A missing absolute path gives vLLM's 404 with the path replaced by <path>."""
        assert self.probe(str(tmp_path / "missing"), name="nope") == (
            404,
            "Loading lora nope failed: No adapter found for <path>",
        )

    def test_directory_without_config_is_404(self, tmp_path: Path) -> None:
        """A directory without adapter_config.json is not an adapter."""
        (tmp_path / "empty").mkdir()
        result = self.probe(str(tmp_path / "empty"))
        assert result is not None
        assert result[0] == 404

    def test_file_instead_of_directory_is_500(self, tmp_path: Path) -> None:
        """A regular file as lora_path fails inside the engine with 'Not a directory' (500)."""
        (tmp_path / "afile.txt").write_text("x")
        assert self.probe(str(tmp_path / "afile.txt")) == (
            500,
            "Call to add_lora method failed: Worker failed with error '[Errno 20] Not a directory: "
            "'<path>'', please check the stack trace above for the root cause",
        )

    def test_rank_above_maximum_is_500(self, tmp_path: Path) -> None:
        """`r` above max_lora_rank gives vLLM's 500 with both numbers."""
        path = write_adapter(tmp_path, "big", rank=64)
        assert self.probe(str(path), max_rank=8) == (
            500,
            "Call to add_lora method failed: Worker failed with error 'LoRA rank 64 is greater than "
            "max_lora_rank 8.', please check the stack trace above for the root cause",
        )

    def test_rank_pattern_counts(self, tmp_path: Path) -> None:
        """A per-module rank in rank_pattern above the maximum is refused like `r`."""
        path = write_adapter(tmp_path, "pat", rank=4, rank_pattern={"q_proj": 32})
        result = self.probe(str(path), max_rank=16)
        assert result is not None
        assert "LoRA rank 32 is greater than max_lora_rank 16." in result[1]

    def test_missing_peft_fields_is_500(self, tmp_path: Path) -> None:
        """An adapter_config.json without `r` fails in the engine (500)."""
        path = tmp_path / "bad"
        path.mkdir()
        (path / "adapter_config.json").write_text('{"lora_alpha": 16, "target_modules": ["q_proj"]}')
        result = self.probe(str(path))
        assert result is not None
        assert result[0] == 500
        assert "Missing required configuration fields: {'r'}" in result[1]

    def test_hub_ids_accepted_unless_disabled(self) -> None:
        """An org/name source absent locally loads when hub ids are allowed, else 404 naming it."""
        assert self.probe("org/name") is None
        assert self.probe("org/name", name="h", hub=False) == (
            404,
            "Loading lora h failed: No adapter found for org/name",
        )

    def test_relative_missing_name_is_404(self) -> None:
        """A bare relative name that does not exist is not a hub id: 404 naming it as sent."""
        assert self.probe("relmissing", name="n") == (
            404,
            "Loading lora n failed: No adapter found for relmissing",
        )

    def test_relative_existing_directory(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative path is resolved against the working directory, as vLLM does."""
        write_adapter(tmp_path, "rel")
        monkeypatch.chdir(tmp_path)
        assert self.probe("rel") is None

    def test_require_weights(self, tmp_path: Path) -> None:
        """With require_weights, a local adapter without tensors fails (500)."""
        path = write_adapter(tmp_path, "noweights")
        err = probe_adapter("x", str(path), max_lora_rank=16, allow_hub_ids=True, require_weights=True)
        assert err is not None
        assert err.status == 500
        (path / "adapter_model.safetensors").write_bytes(b"\0")
        assert (
            probe_adapter("x", str(path), max_lora_rank=16, allow_hub_ids=True, require_weights=True) is None
        )


class TestHelpers:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("org/name", True),
            ("ttt421/nec119-small-segment-lora", True),
            ("name", False),
            ("a/b/c", False),
            ("../x", False),
            ("org/..name", False),
            ("/abs/path", False),
        ],
    )
    def test_hub_id_shape(self, value: str, expected: bool) -> None:
        """Only org/name shaped strings count as hub ids."""
        assert looks_like_hub_id(value) is expected

    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            ("No adapter found for /tmp/a/b", "No adapter found for <path>"),
            ("No adapter found for /work/x/adapter_config.json", "No adapter found for <path>"),
            ("No adapter found for org/name", "No adapter found for org/name"),
            ("obj <X at 0xdeadbeef>", "obj <X>"),
            ("  padded  ", "padded"),
        ],
    )
    def test_sanitize_message(self, message: str, expected: str) -> None:
        """Paths and addresses are scrubbed from messages the way vLLM scrubs them."""
        assert sanitize_message(message) == expected
