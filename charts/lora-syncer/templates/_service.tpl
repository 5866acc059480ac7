{{/* The Service of one pool (chart root, or the second pool's root). */}}
{{- define "lora-syncer.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "lora-syncer.fullname" . }}
  labels:
    {{- include "lora-syncer.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type }}
  selector:
    {{- include "lora-syncer.selectorLabels" . | nindent 4 }}
  ports:
    # Clients go through the rewrite proxy when it is on, straight to vLLM when it is off.
    - name: http
      port: {{ .Values.service.port }}
      targetPort: {{ ternary "proxy" "http" .Values.proxy.enabled }}
      protocol: TCP
    - name: metrics
      port: {{ .Values.sidecar.metricsPort }}
      targetPort: metrics
      protocol: TCP
    {{- if .Values.router.enabled }}
    # The router (standalone proxy) goes straight to vLLM: it has rewritten the model for this pool already.
    - name: vllm
      port: {{ .Values.vllm.port }}
      targetPort: http
      protocol: TCP
    {{- end }}
{{- end }}
