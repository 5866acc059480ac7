#!/usr/bin/env bash
# Install everything and run the whole test suite, the real-vLLM tier included.
# Usage: bash scripts/test.sh [pytest args...]
#
# Every install step fails the script, loudly. Tools the tests need are installed with apt when
# running as root on a Debian-like machine and missing (nothing is run for tools already present);
# otherwise the missing ones are named up front: with CI=true that is an error, locally a warning
# (the tests that need them then skip, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv || { echo "error: $PYTHON -m venv failed; install Python >= 3.11 with venv (apt-get install python3-venv)" >&2; exit 1; }
fi
# pip prints one "Location ... is ignored" note per missing local wheel folder: drop those lines,
# keep everything else, and keep pip's exit status (pipefail).
pip_install() {
  .venv/bin/python -m pip install --quiet "$@" 2>&1 | { grep -v -e "is ignored" || true; }
}
pip_install --upgrade pip || { echo "error: upgrading pip in .venv failed (see above)" >&2; exit 1; }
pip_install -e '.[dev,fast]' || { echo "error: installing lora-syncer with its dev and fast extras into .venv failed (see above)" >&2; exit 1; }
.venv/bin/python -c "import lora_syncer, pytest, hypothesis" # fail here, clearly, if the install did not work

# Tools the tests need, by what needs them:
#   jq, curl           the seed traffic-script test
#   kubectl            the packaging tests (kustomize render)
#   podman, runc, debootstrap   the image test (tests/packaging/test_image.py: build and run the image)
#   prometheus, promtool        tests that run a real Prometheus
#   nginx, wrk         the proxy benchmark (bench/bench_proxy.py)
missing=0
ensure_tools "the traffic-script test" jq:jq curl:curl || missing=1
ensure_tools "the kustomize packaging tests" kubectl:kubectl || missing=1
ensure_tools "the image test" podman:podman runc:runc debootstrap:debootstrap || missing=1
ensure_tools "the Prometheus tests" prometheus:prometheus promtool:prometheus || missing=1
ensure_tools "the proxy benchmark" nginx:nginx wrk:wrk || missing=1
if [[ $missing -eq 1 ]]; then
  if [[ "${CI:-}" == true ]]; then
    echo "error: tools are missing (above); CI must run every test" >&2
    exit 1
  fi
  echo "warning: tools are missing (above); the tests that need them will skip" >&2
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
