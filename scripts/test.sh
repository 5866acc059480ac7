#!/usr/bin/env bash
# Install everything and run the whole test suite, the real-vLLM tier included.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# pip's notes about missing local mirror folders are noise here.
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install --quiet -e '.[dev,fast]' 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import lora_syncer, pytest, hypothesis" # fail here, clearly, if the install did not work

# The seed's traffic script needs curl and jq.
if ! command -v jq >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && apt-get install -y -qq jq curl >/dev/null
  else
    echo "note: install jq and curl to run the seed traffic-script test" >&2
  fi
fi

# The packaging tests render the kustomize manifests with kubectl.
if ! command -v kubectl >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && apt-get install -y -qq kubectl >/dev/null || echo "note: could not install kubectl" >&2
fi

# The real-vLLM tier's environment (cached outside the checkout; a no-op once it exists).
bash scripts/setup-vllm-env.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
