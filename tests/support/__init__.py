"""Helpers shared by every test tier and by bench/reliability_report.py.

- `wait`: `eventually` (async and blocking) and `seconds_until` (a figure, not an assertion);
- `net`: `free_port`;
- `http`: a bounded client session, waiting for a URL to answer, the OpenAI error shape;
- `emulator`: the emulated vLLM in-process and as a `lora-syncer emulator` child process;
- `kubelet`: ConfigMap volumes written the way kubelet writes them;
- `seeds`: the guides' documents as shipped in `examples/`;
- `processes`: `python -m lora_syncer ...` child processes;
- `fixtures`: the pytest fixtures built on the above (registered by tests/conftest.py);
- `reliability`: the reliability tier's scenarios.
"""
