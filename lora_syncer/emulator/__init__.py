"""A vLLM-compatible server for tests, benchmarks and the demo, with fault injection.

It answers the routes lora-syncer uses (`/health`, `/version`, `/v1/models`, the LoRA admin
routes, completions and chat completions) with vLLM 0.32's statuses, bodies and messages, and
can be made slow, failing, restarting or unreachable on demand. See docs/emulator.md.
"""

from lora_syncer.emulator.calls import CallLog, CallRecord
from lora_syncer.emulator.config import DEFAULT_SERVED_MODEL_NAME, EmulatorConfig, parse_lora_modules
from lora_syncer.emulator.emulator import Emulator
from lora_syncer.emulator.faults import ENDPOINTS, Faults

__all__ = [
    "DEFAULT_SERVED_MODEL_NAME",
    "ENDPOINTS",
    "CallLog",
    "CallRecord",
    "Emulator",
    "EmulatorConfig",
    "Faults",
    "parse_lora_modules",
]
