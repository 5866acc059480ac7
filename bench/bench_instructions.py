"""Benchmark: instructions per proxied request, counted by valgrind, to compare two builds exactly.

    .venv/bin/python -m bench.bench_instructions [--requests 2000] [--warmup 300] [--compare DIR ...] [--build compiled|python]

Why: CPU time per request (bench/bench_proxy.py) moves 10-30% between runs on a shared 2-core
machine, so a change worth 5% cannot be seen there, only guessed at. Counting the instructions
the proxy's process runs does not depend on the machine's other work: the same build measured
twice differs by well under 1%.

What is counted: user-space instructions of the whole proxy process (the compiled modules,
CPython, uvloop, llhttp, orjson, the C library), from `valgrind --tool=callgrind`, for
`--requests` JSON chat completions sent one after another on one keep-alive connection, after
`--warmup` requests that are not counted. The proxy runs at its default flags with the 90/10
rule of bench_proxy, in front of the emulator (not under valgrind). Not counted: the kernel's
share (system calls, the TCP stack), which a code change rarely moves.

`--compare DIR` (repeatable) measures another tree the same way (`PYTHONPATH=DIR`: a compiled
tree from `tests.support.compiled.compiled_tree(path)`, or a source checkout). The profile of
each run is kept (`--keep DIR`) for `callgrind_annotate`. valgrind is required:
`bash scripts/setup-bench-tools.sh --instructions` installs it when run as root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.bench_proxy import ALIAS, PROMPT, RULES, _listening, _machine, _spawn, emulator_argv
from tests.support.compiled import compiled_tree
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[1]
# Under valgrind the proxy starts and answers about fifty times slower than it does natively.
_START_WITHIN = 180.0
_ANSWER_WITHIN = 30.0


@dataclass(frozen=True)
class Count:
    """One tree's figures."""

    instructions: int
    per_request: float
    build: str  # as the proxy's `proxy listening` line says: compiled or python


def _request(port: int) -> bytes:
    body = json.dumps({"model": ALIAS, "messages": PROMPT, "max_tokens": 1}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _send(port: int, count: int) -> None:
    """`count` requests in turn on one keep-alive connection; each answer must be a 200 with a body."""
    request = _request(port)
    with socket.create_connection(("127.0.0.1", port), timeout=_ANSWER_WITHIN) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        for _ in range(count):
            sock.sendall(request)
            while b"\r\n\r\n" not in pending:
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit("the proxy closed the connection")
                pending += chunk
            head, _, pending = pending.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                raise SystemExit(f"the proxy answered {head.splitlines()[0]!r}")
            match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if match is None:
                raise SystemExit("the proxy's answer has no Content-Length")
            length = int(match.group(1))
            while len(pending) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit("the proxy closed the connection mid-answer")
                pending += chunk
            pending = pending[length:]


def _callgrind(argv: list[str]) -> None:
    out = subprocess.run(["callgrind_control", *argv], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(
            f"callgrind_control {' '.join(argv)} failed: {out.stderr.strip() or out.stdout.strip()}"
        )


def _measure(
    name: str, pythonpath: Path, upstream: int, tmp: Path, requests: int, warmup: int, keep: Path | None
) -> Count:
    """Instructions per request of one proxy tree."""
    rules = tmp / "rules.yaml"
    port = free_port()
    out = tmp / f"callgrind.{name}.out"
    # A fixed hash seed: string hashes (and so dictionary probing) are then the same in every run.
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONHASHSEED": "0"}
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",  # start-up and warm-up are not counted
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "lora_syncer",
        "proxy",
        "--rules",
        str(rules),
        "--server",
        f"http://127.0.0.1:{upstream}",
        "--proxy-host",
        "127.0.0.1",
        "--proxy-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(free_port()),
    ]
    log = tmp / f"{name}.log"
    proc = _spawn(argv, port, log, env, tmp, within=_START_WITHIN)
    try:
        build = _listening(log, "build")
        _send(port, warmup)
        _callgrind(["--instr=on", str(proc.pid)])
        _send(port, requests)
        _callgrind(["--dump", str(proc.pid)])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    dump = Path(f"{out}.1")  # the dump asked for; the file without a suffix holds the shutdown
    totals = re.search(r"(?m)^(?:summary|totals):\s*(\d+)", dump.read_text(errors="replace"))
    if totals is None:
        raise SystemExit(f"no totals in {dump}")
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        (keep / f"callgrind.{name}.out").write_bytes(dump.read_bytes())
    total = int(totals.group(1))
    return Count(total, total / requests, build)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests counted (default 2000)")
    parser.add_argument("--warmup", type=int, default=300, help="requests sent first, not counted")
    parser.add_argument(
        "--compare", type=Path, action="append", default=[], help="another tree to measure (PYTHONPATH=DIR)"
    )
    parser.add_argument(
        "--build",
        choices=("compiled", "python"),
        default="compiled",
        help="this checkout compiled by mypyc as the image ships it (default), or its Python sources",
    )
    parser.add_argument("--keep", type=Path, help="keep each run's callgrind profile in this directory")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.requests < 1 or args.warmup < 1:
        parser.error("--requests and --warmup must be at least 1")
    for tree in args.compare:
        if not (tree / "lora_syncer").is_dir():
            parser.error(f"--compare {tree}: no lora_syncer package in it")
    tools = subprocess.run(
        ["bash", str(ROOT / "scripts/setup-bench-tools.sh"), "--instructions"], check=False
    )
    if tools.returncode != 0:
        raise SystemExit(tools.returncode)

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    mine = compiled_tree() if args.build == "compiled" else ROOT
    trees = [("proxy", mine)] + [
        (f"base{i + 1 if i else ''}", t.resolve()) for i, t in enumerate(args.compare)
    ]
    print(f"machine: {_machine()}")
    print(
        f"{args.requests} requests counted after {args.warmup} (one keep-alive connection, JSON, 90/10 rule)\n"
    )
    results: dict[str, Count] = {}
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "rules.yaml").write_text(RULES)
        upstream = free_port()
        emulator = _spawn(emulator_argv(tmp, upstream), upstream, tmp / "upstream.log")
        try:
            for name, tree in trees:
                started = time.monotonic()
                results[name] = r = _measure(name, tree, upstream, tmp, args.requests, args.warmup, args.keep)
                print(
                    f"{name:<6} {r.per_request:>10,.0f} instructions/request  "
                    f"(build {r.build}, {tree}, {time.monotonic() - started:.0f} s)",
                    flush=True,
                )
        finally:
            emulator.send_signal(signal.SIGTERM)
            emulator.wait(timeout=30)
    for name, _ in trees[1:]:
        print(f"proxy/{name}: {results['proxy'].per_request / results[name].per_request:.3f}")
    if args.json:
        figures = {name: asdict(count) for name, count in results.items()}
        args.json.write_text(
            json.dumps({"machine": _machine(), "requests": args.requests, "results": figures}, indent=2)
        )


if __name__ == "__main__":
    main()
