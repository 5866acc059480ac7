"""One module per `lora-syncer` subcommand: `add_arguments(parser)` and `run(args) -> int`."""
