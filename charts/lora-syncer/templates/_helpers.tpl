{{/* Chart name, truncated to a DNS label. */}}
{{- define "lora-syncer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: <release>-<chart>, or the release name when it already holds the chart name. */}}
{{- define "lora-syncer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lora-syncer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lora-syncer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lora-syncer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lora-syncer.labels" -}}
helm.sh/chart: {{ include "lora-syncer.chart" . }}
{{ include "lora-syncer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Name of the adapters ConfigMap: the existing one, or the one this chart renders. */}}
{{- define "lora-syncer.adaptersConfigMap" -}}
{{- if .Values.adapters.existingConfigMap }}
{{- .Values.adapters.existingConfigMap }}
{{- else }}
{{- printf "%s-adapters" (include "lora-syncer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Name of the rules ConfigMap: the existing one, or the one this chart renders. */}}
{{- define "lora-syncer.rulesConfigMap" -}}
{{- if .Values.rules.existingConfigMap }}
{{- .Values.rules.existingConfigMap }}
{{- else }}
{{- printf "%s-rules" (include "lora-syncer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "lora-syncer.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) }}
{{- end }}

{{/*
The lora-syncer container. Rendered under initContainers (with restartPolicy: Always, a native
sidecar) or under containers (sidecar.native: false); the body is the same.
*/}}
{{- define "lora-syncer.sidecarContainer" -}}
- name: lora-syncer
  image: {{ include "lora-syncer.sidecarImage" . | quote }}
  imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
  {{- if .Values.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  args:
    - run
    {{- with .Values.sidecar.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  env:
    # The old upstream sidecar's variable: the adapters file, mounted from the ConfigMap directory.
    - name: DYNAMIC_LORA_ROLLOUT_CONFIG
      value: /config/configmap.yaml
    # vLLM listens in the same pod; this overrides host/port written in the adapters file.
    - name: LORA_SYNCER_SERVER
      value: {{ printf "http://127.0.0.1:%d" (int .Values.vllm.port) | quote }}
    - name: LORA_SYNCER_METRICS_PORT
      value: {{ .Values.sidecar.metricsPort | quote }}
    {{- if .Values.proxy.enabled }}
    - name: LORA_SYNCER_RULES
      value: /rules/rules.yaml
    # AdapterRollout progress survives a container restart (an emptyDir lives as long as the pod).
    - name: LORA_SYNCER_STATE_DIR
      value: /var/lib/lora-syncer
    - name: LORA_SYNCER_PROXY_PORT
      value: {{ .Values.proxy.port | quote }}
    {{- end }}
    - name: LORA_SYNCER_HEALTH_CHECK_TIMEOUT
      value: {{ .Values.sidecar.healthCheckTimeout | quote }}
    - name: LORA_SYNCER_RECONCILE_TRIGGER
      value: {{ .Values.sidecar.reconcileTrigger | quote }}
    - name: LORA_SYNCER_BASE_MODEL_POLICY
      value: {{ .Values.sidecar.baseModelPolicy | quote }}
    {{- if .Values.sidecar.prune }}
    - name: LORA_SYNCER_PRUNE
      value: "true"
    {{- end }}
    {{- with .Values.sidecar.allowedSources }}
    - name: LORA_SYNCER_ALLOWED_SOURCES
      value: {{ join "," . | quote }}
    {{- end }}
    {{- if .Values.adapterCache.enabled }}
    - name: LORA_SYNCER_ADAPTER_CACHE
      value: {{ .Values.adapterCache.mountPath | quote }}
    - name: LORA_SYNCER_ADAPTER_CACHE_MAX_BYTES
      value: {{ printf "%dGiB" (int .Values.adapterCache.maxGiB) | quote }}
    - name: LORA_SYNCER_ADAPTER_CACHE_GC_GRACE
      value: {{ .Values.adapterCache.gcGraceSeconds | quote }}
    {{- end }}
    {{- with .Values.sidecar.readyWhen }}
    - name: LORA_SYNCER_READY_WHEN
      value: {{ . | quote }}
    {{- end }}
    - name: LORA_SYNCER_LOG_FORMAT
      value: {{ .Values.sidecar.logFormat | quote }}
    {{- if .Values.sidecar.apiKeySecret.name }}
    - name: VLLM_API_KEY
      valueFrom:
        secretKeyRef:
          name: {{ .Values.sidecar.apiKeySecret.name }}
          key: {{ .Values.sidecar.apiKeySecret.key }}
    {{- end }}
    {{- with .Values.sidecar.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: metrics
      containerPort: {{ .Values.sidecar.metricsPort }}
      protocol: TCP
    {{- if .Values.proxy.enabled }}
    - name: proxy
      containerPort: {{ .Values.proxy.port }}
      protocol: TCP
    {{- end }}
  {{- with .Values.sidecar.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.sidecar.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.sidecar.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.sidecar.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  # Whole directories, never subPath: kubelet never updates a subPath mount, and the sidecar
  # watches the directory for the ..data symlink swap.
  volumeMounts:
    - name: lora-syncer-config
      mountPath: /config
      readOnly: true
    {{- if .Values.proxy.enabled }}
    - name: lora-syncer-rules
      mountPath: /rules
      readOnly: true
    {{- end }}
    - name: lora-syncer-tmp
      mountPath: /tmp
    - name: lora-syncer-state
      mountPath: /var/lib/lora-syncer
    {{- if .Values.adapterCache.enabled }}
    - name: adapter-cache
      mountPath: {{ .Values.adapterCache.mountPath }}
    {{- end }}
{{- end }}

{{/* The first pool's name: what rules' poolRef and HTTPRoute backendRefs call it. */}}
{{- define "lora-syncer.poolName" -}}
{{- default (include "lora-syncer.fullname" .) .Values.pool.name }}
{{- end }}

{{/* Object name prefix of the second pool: <fullname>-new (its own selector labels, so neither Service picks the other's pods). */}}
{{- define "lora-syncer.secondPoolFullname" -}}
{{- printf "%s-new" (include "lora-syncer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lora-syncer.secondPoolName" -}}
{{- default (include "lora-syncer.secondPoolFullname" .) .Values.secondPool.name }}
{{- end }}

{{- define "lora-syncer.routerName" -}}
{{- printf "%s-router" (include "lora-syncer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The values as the second pool sees them: its own names and selector labels, its node
placement, its vLLM settings merged over the first pool's, and the first pool's adapters
ConfigMap (shared). Rules: its own when secondPool.rules.documents is set, else the first pool's.
*/}}
{{- define "lora-syncer.secondPoolValues" -}}
{{- $vals := deepCopy .Values }}
{{- $sp := .Values.secondPool }}
{{- $_ := set $vals "fullnameOverride" (include "lora-syncer.secondPoolFullname" .) }}
{{- $_ := set $vals "nameOverride" (printf "%s-new" (include "lora-syncer.name" .) | trunc 63 | trimSuffix "-") }}
{{- $_ := set $vals "replicaCount" $sp.replicaCount }}
{{- $_ := set $vals "nodeSelector" $sp.nodeSelector }}
{{- $_ := set $vals "tolerations" $sp.tolerations }}
{{- $_ := set $vals "affinity" $sp.affinity }}
{{- $_ := set $vals "vllm" (mergeOverwrite (deepCopy .Values.vllm) (deepCopy $sp.vllm)) }}
{{- $_ := set $vals.adapters "existingConfigMap" (include "lora-syncer.adaptersConfigMap" .) }}
{{- if $sp.rules.documents }}
{{- $_ := set $vals "rules" (dict "existingConfigMap" "" "documents" $sp.rules.documents) }}
{{- else }}
{{- $_ := set $vals "rules" (dict "existingConfigMap" (include "lora-syncer.rulesConfigMap" .) "documents" list) }}
{{- end }}
{{- toYaml $vals }}
{{- end }}
