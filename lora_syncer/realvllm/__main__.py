"""`python -m lora_syncer.realvllm`: run the real-vLLM test server in the foreground."""

import sys

from lora_syncer.realvllm.launcher import main

sys.exit(main())
