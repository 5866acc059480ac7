"""One module per `lora-syncer` subcommand: `run(args) -> int` (flags: `lora_syncer.options`)."""
