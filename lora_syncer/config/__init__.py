"""The user-edited file formats: the adapters file (`vLLMLoRAConfig`) and the rules file."""
