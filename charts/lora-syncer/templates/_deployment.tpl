{{/* The vLLM + sidecar Deployment of one pool. Called with the chart root, or with the second pool's root (see second-pool.yaml). */}}
{{- define "lora-syncer.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "lora-syncer.fullname" . }}
  labels:
    {{- include "lora-syncer.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      {{- include "lora-syncer.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      # No checksum annotation for the adapters or rules ConfigMap on purpose: the sidecar applies
      # their changes live, and a checksum would restart vLLM (and drop every loaded adapter).
      {{- with .Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      labels:
        {{- include "lora-syncer.labels" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      # Neither container talks to the Kubernetes API: the ConfigMaps arrive as mounted files.
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .Values.sidecar.native }}
      # A native sidecar (Kubernetes >= 1.29): starts before vLLM, stops after it, and its
      # readiness counts towards the pod's.
      initContainers:
        {{- include "lora-syncer.sidecarContainer" . | nindent 8 }}
      {{- end }}
      containers:
        - name: vllm
          image: "{{ .Values.vllm.image.repository }}:{{ .Values.vllm.image.tag }}"
          imagePullPolicy: {{ .Values.vllm.image.pullPolicy }}
          {{- with .Values.vllm.command }}
          command:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          args:
            - --model
            - {{ .Values.vllm.model | quote }}
            {{- with .Values.vllm.servedModelName }}
            - --served-model-name
            - {{ . | quote }}
            {{- end }}
            - --port
            - {{ .Values.vllm.port | quote }}
            - --enable-lora
            - --max-loras
            - {{ .Values.vllm.maxLoras | quote }}
            - --max-lora-rank
            - {{ .Values.vllm.maxLoraRank | quote }}
            # Runtime LoRA updating refuses more than one API server.
            - --api-server-count
            - "1"
            {{- with .Values.vllm.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            # Enables /v1/load_lora_adapter and /v1/unload_lora_adapter, which the sidecar calls.
            - name: VLLM_ALLOW_RUNTIME_LORA_UPDATING
              value: "true"
            {{- if .Values.vllm.hfTokenSecret.name }}
            - name: HF_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ .Values.vllm.hfTokenSecret.name }}
                  key: {{ .Values.vllm.hfTokenSecret.key }}
            {{- end }}
            {{- with .Values.vllm.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ .Values.vllm.port }}
              protocol: TCP
          {{- with .Values.vllm.startupProbe }}
          startupProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.vllm.livenessProbe }}
          livenessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.vllm.readinessProbe }}
          readinessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.vllm.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: dshm
              mountPath: /dev/shm
            {{- if .Values.adapterCache.enabled }}
            # The sidecar writes each adapter version here; vLLM loads it by the same path.
            - name: adapter-cache
              mountPath: {{ .Values.adapterCache.mountPath }}
              readOnly: true
            {{- end }}
            {{- with .Values.vllm.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
        {{- if not .Values.sidecar.native }}
        {{- include "lora-syncer.sidecarContainer" . | nindent 8 }}
        {{- end }}
      volumes:
        - name: dshm
          emptyDir:
            medium: Memory
            {{- with .Values.vllm.shmSizeLimit }}
            sizeLimit: {{ . }}
            {{- end }}
        - name: lora-syncer-config
          configMap:
            name: {{ include "lora-syncer.adaptersConfigMap" . }}
        {{- if .Values.proxy.enabled }}
        - name: lora-syncer-rules
          configMap:
            name: {{ include "lora-syncer.rulesConfigMap" . }}
        {{- end }}
        - name: lora-syncer-tmp
          emptyDir:
            sizeLimit: 16Mi
        - name: lora-syncer-state
          emptyDir:
            sizeLimit: 16Mi
        {{- if .Values.adapterCache.enabled }}
        # Disk-backed (no medium: Memory): the budget plus the largest download in flight.
        - name: adapter-cache
          emptyDir:
            sizeLimit: {{ printf "%dGi" (add (int .Values.adapterCache.maxGiB) (int .Values.adapterCache.largestDownloadGiB)) }}
        {{- end }}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
