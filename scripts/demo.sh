#!/usr/bin/env bash
# Install lora-syncer into .venv (as scripts/test.sh does) and run the demo: the LoRA Adapter
# Rollout guide walked end to end against the vLLM emulator, in one process, in a few seconds.
# Usage: bash scripts/demo.sh [demo flags...]   e.g. --step, --real-vllm, --color never
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# pip's notes about missing local mirror folders are noise here: drop them, keep pip's exit status.
pip_install() {
  .venv/bin/python -m pip install --quiet "$@" 2>&1 | { grep -v -e "is ignored" || true; }
}
pip_install --upgrade pip || { echo "error: upgrading pip in .venv failed (see above)" >&2; exit 1; }
pip_install -e . || { echo "error: installing lora-syncer into .venv failed (see above)" >&2; exit 1; }
.venv/bin/python -c "import lora_syncer" # fail here, clearly, if the install did not work

exec .venv/bin/lora-syncer demo "$@"
