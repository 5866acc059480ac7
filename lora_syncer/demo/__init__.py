"""`lora-syncer demo`: the LoRA Adapter Rollout guide, walked end to end on one machine.

`steps` holds the walk as data, `checks` decides pass/fail (pure), `render` draws it on a
terminal, `traffic` sends the requests, `servers` starts the model server and `walkthrough`
ties them together. `rollout` is `demo --rollout`: automated AdapterRollouts on the same parts.
"""
