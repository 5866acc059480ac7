"""Build a tiny random Llama, its tokenizer and random PEFT LoRA adapters for a real vLLM.

Run this file with the *vLLM* environment's python (it needs torch, transformers, tokenizers and
safetensors, which the project's own environment does not have)::

    $VENV/bin/python lora_syncer/realvllm/assets.py OUT_DIR [--adapters 4]

Nothing is downloaded. The output is cached: a stamp file records the build parameters and a
second run with the same parameters returns at once. It prints one JSON object describing the
layout (model dir, adapter dirs, the rank-too-high adapter) on stdout.

Nothing in the package imports this module: `lora_syncer.realvllm.launcher` runs it as a script.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

# Bump when the layout or content changes so cached directories are rebuilt.
BUILD_VERSION = 1
STAMP = ".lora-syncer-assets.json"

HIDDEN = 128
HEADS = 2  # head_dim 64: the CPU attention backend rejects smaller heads
LAYERS = 2
INTERMEDIATE = 256
VOCAB = 512
MAX_POSITIONS = 512
ADAPTER_RANK = 8
BAD_RANK = 64  # above the launcher's --max-lora-rank 8: the "rank too high" case

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A LoRA adapter changes a few weights of a large language model.",
    "The syncer loads and unloads adapters until the server matches the file.",
    "Canary rollouts move traffic from version one to version two step by step.",
    "Hello, how are you today? I am fine, thank you very much.",
    "Kubernetes writes ConfigMap volumes atomically through a symlink swap.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    "user assistant system: tell me a short story about a small model.",
]


def _lib(name: str) -> Any:
    """Import a library of the vLLM environment lazily and untyped.

    The project's own environment (where mypy runs) has none of them, and the cached-build path
    must not pay for importing torch.
    """
    return importlib.import_module(name)


def _layout(out: Path, adapters: int) -> dict[str, Any]:
    return {
        "build_version": BUILD_VERSION,
        "model_dir": str(out / "model"),
        "adapter_dirs": [str(out / "adapters" / f"adapter-{i}") for i in range(adapters)],
        "bad_rank_adapter_dir": str(out / "adapters" / "adapter-rank64"),
        "adapter_rank": ADAPTER_RANK,
        "bad_rank": BAD_RANK,
    }


def _build_tokenizer(model_dir: Path) -> None:
    tokenizers = _lib("tokenizers")
    transformers = _lib("transformers")
    pre_tokenizers = tokenizers.pre_tokenizers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    specials = ["<s>", "</s>", "<unk>", "<pad>"]
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = MAX_POSITIONS
    fast.save_pretrained(str(model_dir))


def _build_model(model_dir: Path) -> None:
    torch = _lib("torch")
    transformers = _lib("transformers")
    transformers.utils.logging.disable_progress_bar()

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=3,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(str(model_dir), safe_serialization=True)


def _build_adapter(adapter_dir: Path, model_dir: Path, rank: int, seed: int) -> None:
    torch = _lib("torch")
    save_file = _lib("safetensors.torch").save_file

    adapter_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for layer in range(LAYERS):
        for proj in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, HIDDEN, generator=gen) * 0.05
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(HIDDEN, rank, generator=gen) * 0.05
    save_file(tensors, str(adapter_dir / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank * 2,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": str(model_dir),
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def build(out: Path, adapters: int) -> dict[str, Any]:
    """Build (or reuse) the assets under `out` and return their layout."""
    layout = _layout(out, adapters)
    stamp = out / STAMP
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == layout:
                return layout
        except ValueError:
            pass
    # Stale or partial build: start over so no half-written file survives.
    for sub in ("model", "adapters"):
        shutil.rmtree(out / sub, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    model_dir = Path(layout["model_dir"])
    model_dir.mkdir(parents=True)
    _build_tokenizer(model_dir)
    _build_model(model_dir)
    for i, adapter in enumerate(layout["adapter_dirs"]):
        _build_adapter(Path(adapter), model_dir, ADAPTER_RANK, seed=1000 + i)
    _build_adapter(Path(layout["bad_rank_adapter_dir"]), model_dir, BAD_RANK, seed=999)
    stamp.write_text(json.dumps(layout, indent=2) + "\n")
    return layout


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: build into OUT_DIR and print the layout as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="output directory (created; reused when up to date)")
    parser.add_argument("--adapters", type=int, default=4, help="number of rank-8 adapters (default 4)")
    args = parser.parse_args(argv)
    if args.adapters < 1:
        parser.error("--adapters must be at least 1")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    layout = build(out, args.adapters)
    json.dump(layout, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
