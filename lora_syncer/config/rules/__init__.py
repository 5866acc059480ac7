"""The rules file: `InferenceModelRewrite`, `InferenceModel` and `HTTPRoute` documents, parsed and validated (pure).

One file (the `rules.yaml` key of a ConfigMap) holds any number of YAML documents, or a
`kind: List` as `kubectl get -o yaml` prints it, of either kind:

```yaml
kind: InferenceModelRewrite            # inference.networking.x-k8s.io/v1alpha2
metadata: {name: small-segment-lora-rewrite}
spec:
  poolRef: {group: inference.networking.k8s.io, name: vllm-qwen3-32b}
  rules:
  - matches: [{model: {type: Exact, value: small-segment-lora}}]   # none = every model
    targets:
    - {modelRewrite: small-segment-lora-v1, weight: 90}
    - {modelRewrite: small-segment-lora-v2, weight: 10}
---
kind: InferenceModel                   # inference.networking.x-k8s.io/v1alpha2
metadata: {name: food-review}
spec:
  modelName: food-review
  poolRef: {name: vllm-llama3-8b-instruct}
  targetModels: [{name: food-review-1, weight: 90}, {name: food-review-2, weight: 10}]
```

Semantics (those of the Gateway API Inference Extension): weights are relative, either every
target of a rule has one or none has (then shares are equal), a weight of 0 drains a target.
For one model name, an Exact match beats a catch-all rule; among equals the oldest
`metadata.creationTimestamp` wins (documents without one count as newest), then the earlier
document, then the earlier rule. A request is rewritten once: targets are never rewritten again,
so two aliases pointing at each other (a loop) are an error.

Unknown keys under `spec` are errors (a misspelt `weight` would silently change a split);
unknown top-level and `metadata` keys are ignored, as kubectl output carries many.

The file may also hold one Gateway API `HTTPRoute` whose rule's `backendRefs` split traffic
between pools (`{name, weight, port?, namespace?}`, `kind: InferencePool` or `Service`); the
standalone proxy routes by it (see `lora_syncer.proxy.pools`), a sidecar ignores it. A rule
whose `poolRef` names a pool applies only to that pool; a rule without `poolRef` applies to
every pool, and for one pool a rule naming it beats one that names none.

Modules: `model` (Target, Rule, RuleSet, precedence), one module per kind (`rewrite`,
`inference_model`, `httproute`), `document` (what every kind reads: metadata, poolRef,
targets), `kinds` (the registry: kind -> parser), `consistency` (checks across rules) and
`parse` (the dispatcher). This package's names are the public API.
"""

from lora_syncer.config.rules.httproute import KIND as ROUTE_KIND
from lora_syncer.config.rules.inference_model import KIND as MODEL_KIND
from lora_syncer.config.rules.kinds import DOCUMENT_KINDS, KINDS, LIST_KINDS
from lora_syncer.config.rules.model import (
    GATEWAY_GROUP,
    KNOWN_GROUPS,
    MAX_WEIGHT,
    POOL_KIND,
    Backend,
    PoolRoute,
    Rule,
    RuleSet,
    SourceDocument,
    Target,
    resolve_precedence,
    rules_for_pool,
)
from lora_syncer.config.rules.parse import (
    is_rules_document,
    parse_rules,
    parse_rules_text,
    rules_from_documents,
)
from lora_syncer.config.rules.rewrite import KIND as REWRITE_KIND

__all__ = [
    "DOCUMENT_KINDS",
    "GATEWAY_GROUP",
    "KINDS",
    "KNOWN_GROUPS",
    "LIST_KINDS",
    "MAX_WEIGHT",
    "MODEL_KIND",
    "POOL_KIND",
    "REWRITE_KIND",
    "ROUTE_KIND",
    "Backend",
    "PoolRoute",
    "Rule",
    "RuleSet",
    "SourceDocument",
    "Target",
    "is_rules_document",
    "parse_rules",
    "parse_rules_text",
    "resolve_precedence",
    "rules_for_pool",
    "rules_from_documents",
]
