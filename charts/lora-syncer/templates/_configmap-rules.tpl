{{/* The rules ConfigMap of one pool (chart root, or the second pool's root). */}}
{{- define "lora-syncer.rulesConfigMapObject" -}}
{{- if and .Values.proxy.enabled (not .Values.rules.existingConfigMap) }}
# The rules file read by the sidecar's rewrite proxy; changes apply live, like the adapters file.
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "lora-syncer.rulesConfigMap" . }}
  labels:
    {{- include "lora-syncer.labels" . | nindent 4 }}
data:
  rules.yaml: |
    {{- if not .Values.rules.documents }}
    # No rules yet: requests pass through unchanged. Add InferenceModelRewrite / InferenceModel
    # documents (values: rules.documents) to split a model name across adapter versions.
    {{- end }}
    {{- range $i, $doc := .Values.rules.documents }}
    {{- if $i }}
    ---
    {{- end }}
    {{- toYaml $doc | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}
