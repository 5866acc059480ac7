"""Scenarios of the reliability tier, shared by its tests, the security tier and bench/reliability_report.py.

Each scenario drives the real pieces on 127.0.0.1 (the in-process `Sidecar` or a
`python -m lora_syncer run` child, the emulated vLLM with its fault injection, a directory
written the way kubelet writes a ConfigMap volume) and returns a result holding figures and
the list of invariant violations it found. Tests assert the violations are empty; the report
prints the figures. Every loop is bounded in count and in time, but no invariant is judged by
the clock: see `audit` for the invariants.

- `files`: the adapters and rules files the scenarios write, good and bad;
- `audit`: the ledger of files written and read, and the call-log invariants;
- `world`: an emulator, a ConfigMap volume and the sidecar in-process;
- `sync_scenarios`: ConfigMap churn, vLLM restart storms, SIGTERM/restart cycles of the process;
- `proxy_scenarios`: the proxy under load while vLLM restarts and the rules change.
"""
