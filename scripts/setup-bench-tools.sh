#!/usr/bin/env bash
# Make sure the proxy benchmarks' tools exist: wrk (the load generator) and nginx (the baseline
# the proxy is compared with) for bench/bench_proxy.py, valgrind for bench/bench_instructions.py
# (--instructions). Installs them with apt when root and missing; otherwise fails with one line
# naming the packages. Each benchmark runs this before measuring anything.
# Usage: bash scripts/setup-bench-tools.sh [--no-nginx | --instructions]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

tools=(wrk:wrk nginx:nginx)
case "${1:-}" in
  "") ;;
  --no-nginx) tools=(wrk:wrk) ;;
  --instructions)
    ensure_tools "the instruction-count benchmark (bench/bench_instructions.py)" valgrind:valgrind callgrind_control:valgrind
    exit 0
    ;;
  *) echo "error: unknown argument $1 (usage: bash scripts/setup-bench-tools.sh [--no-nginx | --instructions])" >&2; exit 2 ;;
esac
ensure_tools "the proxy benchmark (bench/bench_proxy.py)" "${tools[@]}"
