"""The syncer: plan (pure), vLLM client, reconciler."""
