"""lora-syncer: keep vLLM's LoRA adapters in line with a ConfigMap, and split traffic across them."""

__version__ = "0.1.0"
