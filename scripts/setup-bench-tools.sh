#!/usr/bin/env bash
# Make sure the proxy benchmark's tools exist: wrk (the load generator) and nginx (the baseline
# the proxy is compared with). Installs them with apt when root and missing; otherwise fails with
# one line naming the packages. bench/bench_proxy.py runs this before measuring anything.
# Usage: bash scripts/setup-bench-tools.sh [--no-nginx]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

tools=(wrk:wrk nginx:nginx)
case "${1:-}" in
  "") ;;
  --no-nginx) tools=(wrk:wrk) ;;
  *) echo "error: unknown argument $1 (usage: bash scripts/setup-bench-tools.sh [--no-nginx])" >&2; exit 2 ;;
esac
ensure_tools "the proxy benchmark (bench/bench_proxy.py)" "${tools[@]}"
