{{/* Names, labels and the values every template derives. */}}

{{- define "moeserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name; suffixes (-coordinator, -workers) keep within 63 characters. */}}
{{- define "moeserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "moeserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "moeserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "moeserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "moeserve.labels" -}}
helm.sh/chart: {{ include "moeserve.chart" . }}
{{ include "moeserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "moeserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "moeserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "moeserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The expert-parallel size: one rank per worker process. Fails on an
expertParallel.size that disagrees with the pods and GPUs asked for.
*/}}
{{- define "moeserve.epSize" -}}
{{- $ranks := mul .Values.workers.nodes .Values.workers.gpusPerNode }}
{{- $size := int .Values.expertParallel.size }}
{{- if and (ne $size 0) (ne $size (int $ranks)) }}
{{- fail (printf "expertParallel.size is %d but workers.nodes x workers.gpusPerNode = %d x %d = %d worker ranks; set them to agree (or expertParallel.size to 0)" $size (int .Values.workers.nodes) (int .Values.workers.gpusPerNode) (int $ranks)) }}
{{- end }}
{{- $ranks }}
{{- end }}

{{/* Checks across values; coordinator-deployment.yaml, rendered in every mode, includes them. */}}
{{- define "moeserve.validate" -}}
{{- $m := .Values.model }}
{{- if and $m.persistentVolumeClaim.claimName $m.hostPath }}
{{- fail "model: set either persistentVolumeClaim.claimName or hostPath, not both" }}
{{- end }}
{{- $underMount := or (eq (trimSuffix "/" $m.path) (trimSuffix "/" $m.mountPath)) (hasPrefix (printf "%s/" (trimSuffix "/" $m.mountPath)) $m.path) }}
{{- if and (or $m.persistentVolumeClaim.claimName $m.hostPath) (not $underMount) }}
{{- fail (printf "model.path %s is not under model.mountPath %s, where the model volume is mounted" $m.path $m.mountPath) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics: enable serviceMonitor or podMonitor, not both (each would scrape the coordinator)" }}
{{- end }}
{{- $_ := include "moeserve.epSize" . }}
{{- end }}

{{/* The model volume, or nothing when the checkpoint comes another way. */}}
{{- define "moeserve.modelVolume" -}}
{{- $m := .Values.model }}
{{- if $m.persistentVolumeClaim.claimName }}
- name: model
  persistentVolumeClaim:
    claimName: {{ $m.persistentVolumeClaim.claimName }}
    readOnly: true
{{- else if $m.hostPath }}
- name: model
  hostPath:
    path: {{ $m.hostPath }}
    type: Directory
{{- end }}
{{- end }}

{{- define "moeserve.modelVolumeMount" -}}
{{- $m := .Values.model }}
{{- if or $m.persistentVolumeClaim.claimName $m.hostPath }}
- name: model
  mountPath: {{ $m.mountPath }}
  readOnly: true
  {{- if and $m.persistentVolumeClaim.claimName $m.persistentVolumeClaim.subPath }}
  subPath: {{ $m.persistentVolumeClaim.subPath }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The coordinator container; the same in the Deployment and in a LeaderWorkerSet's leader. */}}
{{- define "moeserve.coordinatorContainer" -}}
{{- $c := .Values.coordinator -}}
- name: coordinator
  image: {{ include "moeserve.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["moeserve-coordinator"]
  args:
    - --listen
    - "0.0.0.0:{{ $c.grpcPort }}"
    # Workers and Admin, with tokens from the internal Secret.
    - --internal-listen
    - "0.0.0.0:{{ $c.internalPort }}"
    - --internal-token-file
    - /etc/moeserve/internal/token
    {{- if .Values.internalPlane.admin }}
    - --admin-token-file
    - /etc/moeserve/internal/admin-token
    {{- end }}
    - --metrics-port
    - {{ $c.metricsPort | quote }}
    - --ep-size
    - {{ include "moeserve.epSize" . | quote }}
    # GPU workers exchange tokens over NCCL; CPU workers over Gloo.
    - --communicator
    - {{ ternary "gloo" "nccl" (eq (.Values.workers.device | default "cuda") "cpu") | quote }}
    {{- if gt (int .Values.expertParallel.redundantExperts) 0 }}
    - --redundant-experts
    - {{ .Values.expertParallel.redundantExperts | quote }}
    {{- end }}
    - --max-batch-tokens
    - {{ $c.maxBatchTokens | quote }}
    - --max-running-seqs
    - {{ $c.maxRunningSeqs | quote }}
    - --max-waiting
    - {{ $c.maxWaiting | quote }}
    - --step-timeout-seconds
    - {{ $c.stepTimeoutSeconds | quote }}
    - --request-recovery-timeout-seconds
    - {{ $c.requestRecoveryTimeoutSeconds | quote }}
    - --worker-heartbeat-seconds
    - {{ $c.workerHeartbeatSeconds | quote }}
    {{- if not $c.prefixCaching }}
    - --no-prefix-caching
    {{- end }}
    {{- if .Values.model.mountInCoordinator }}
    # The model directory holds tokenizer.json and tokenizer_config.json:
    # text prompts, Chat and Tokenize.
    - --tokenizer
    - {{ .Values.model.path | quote }}
    {{- end }}
    {{- if gt (int $c.httpPort) 0 }}
    # The OpenAI-compatible HTTP API beside gRPC.
    - --http-listen
    - "0.0.0.0:{{ $c.httpPort }}"
    {{- if $c.apiKeysSecret }}
    - --api-key-file
    - /etc/moeserve/api-keys/{{ $c.apiKeysKey }}
    {{- end }}
    {{- end }}
    {{- range $c.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- with $c.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: grpc
      containerPort: {{ $c.grpcPort }}
      protocol: TCP
    - name: internal
      containerPort: {{ $c.internalPort }}
      protocol: TCP
    - name: metrics
      containerPort: {{ $c.metricsPort }}
      protocol: TCP
    {{- if gt (int $c.httpPort) 0 }}
    - name: http
      containerPort: {{ $c.httpPort }}
      protocol: TCP
    {{- end }}
  {{- with $c.startupProbe }}
  {{- if .enabled }}
  startupProbe:
    grpc:
      port: {{ $c.grpcPort }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with $c.readinessProbe }}
  {{- if .enabled }}
  readinessProbe:
    grpc:
      port: {{ $c.grpcPort }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with $c.livenessProbe }}
  {{- if .enabled }}
  livenessProbe:
    tcpSocket:
      port: grpc
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  resources:
    {{- toYaml $c.resources | nindent 4 }}
  securityContext:
    {{- toYaml $c.securityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: coordinator-secrets
      mountPath: /etc/moeserve/internal
      readOnly: true
    {{- if .Values.model.mountInCoordinator }}
    {{- with include "moeserve.modelVolumeMount" . }}{{ . | trim | nindent 4 }}{{ end }}
    {{- end }}
    {{- if and (gt (int $c.httpPort) 0) $c.apiKeysSecret }}
    - name: api-keys
      mountPath: /etc/moeserve/api-keys
      readOnly: true
    {{- end }}
{{- end }}

{{/*
The workers container of one pod: the launcher starts one moeserve-worker per
GPU with ranks POD_INDEX x gpusPerNode + i. Arguments: the root context as
"root", the coordinator address as "coordinator" and the Downward API label
that holds the pod index as "podIndexLabel".
*/}}
{{- define "moeserve.workersContainer" -}}
{{- $ := .root }}
{{- $w := $.Values.workers }}
{{- $gpus := int $w.gpusPerNode -}}
- name: workers
  image: {{ include "moeserve.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  command: ["bash", "/opt/moeserve/launcher/launch-workers.sh"]
  args:
    - --local-workers
    - {{ $gpus | quote }}
    - --device
    - {{ $w.device | default "cuda" | quote }}
    - --
    - moeserve-worker
    - --coordinator
    - {{ .coordinator | quote }}
    - --internal-token-file
    - /etc/moeserve/worker-token/token
    - --model
    - {{ $.Values.model.path | quote }}
    - --ep-size
    - {{ include "moeserve.epSize" $ | quote }}
    # Other ranks reach this pod's workers here for expert-parallel traffic
    # (Gloo on CPU; NCCL finds its own interfaces).
    - --communicator-host
    - $(POD_IP)
    - --connect-timeout-seconds
    - {{ $w.connectTimeoutSeconds | quote }}
    {{- if $w.kvCacheTokens }}
    - --kv-cache-tokens
    - {{ $w.kvCacheTokens | quote }}
    {{- end }}
    {{- range $w.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: POD_INDEX
      valueFrom:
        fieldRef:
          fieldPath: metadata.labels['{{ .podIndexLabel }}']
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    # CUDA's JIT cache; the root filesystem is read-only.
    - name: CUDA_CACHE_PATH
      value: /tmp/cuda-cache
    {{- with $.Values.nccl.debug }}
    - name: NCCL_DEBUG
      value: {{ . | quote }}
    {{- end }}
    {{- with $.Values.nccl.socketIfname }}
    - name: NCCL_SOCKET_IFNAME
      value: {{ . | quote }}
    {{- end }}
    {{- if $.Values.rdma.enabled }}
    {{- with $.Values.nccl.ibHca }}
    - name: NCCL_IB_HCA
      value: {{ . | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" $.Values.nccl.ibGidIndex) }}
    - name: NCCL_IB_GID_INDEX
      value: {{ $.Values.nccl.ibGidIndex | quote }}
    {{- end }}
    {{- else }}
    - name: NCCL_IB_DISABLE
      value: "1"
    {{- end }}
    {{- range $name, $value := $.Values.nccl.env }}
    - name: {{ $name }}
      value: {{ $value | quote }}
    {{- end }}
    {{- with $w.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  resources:
    requests:
      {{- range $k, $v := $w.resources.requests }}
      {{ $k }}: {{ $v | quote }}
      {{- end }}
      {{- if ne ($w.device | default "cuda") "cpu" }}
      {{ $w.gpuResourceName }}: {{ $gpus | quote }}
      {{- end }}
      {{- if $.Values.rdma.enabled }}
      {{- range $k, $v := $.Values.rdma.resources }}
      {{ $k }}: {{ $v | quote }}
      {{- end }}
      {{- end }}
    limits:
      {{- range $k, $v := $w.resources.limits }}
      {{ $k }}: {{ $v | quote }}
      {{- end }}
      {{- if ne ($w.device | default "cuda") "cpu" }}
      {{ $w.gpuResourceName }}: {{ $gpus | quote }}
      {{- end }}
      {{- if $.Values.rdma.enabled }}
      {{- range $k, $v := $.Values.rdma.resources }}
      {{ $k }}: {{ $v | quote }}
      {{- end }}
      {{- end }}
  securityContext:
    {{- $sc := deepCopy $w.securityContext }}
    {{- if and $.Values.rdma.enabled $.Values.rdma.ipcLock }}
    {{- $caps := default dict $sc.capabilities }}
    {{- $_ := set $caps "add" (append (default list $caps.add) "IPC_LOCK" | uniq) }}
    {{- $_ := set $sc "capabilities" $caps }}
    {{- end }}
    {{- toYaml $sc | nindent 4 }}
  volumeMounts:
    - name: launcher
      mountPath: /opt/moeserve/launcher
      readOnly: true
    - name: tmp
      mountPath: /tmp
    - name: worker-token
      mountPath: /etc/moeserve/worker-token
      readOnly: true
    {{- if $w.sharedMemory.enabled }}
    - name: dshm
      mountPath: /dev/shm
    {{- end }}
    {{- with include "moeserve.modelVolumeMount" $ }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}

{{/* Volumes of a pod that runs workers. */}}
{{- define "moeserve.workersVolumes" -}}
- name: launcher
  configMap:
    name: {{ include "moeserve.fullname" . }}-launcher
    defaultMode: 0555
- name: tmp
  emptyDir: {}
{{ include "moeserve.workerTokenVolume" . }}
{{- if .Values.workers.sharedMemory.enabled }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.workers.sharedMemory.sizeLimit }}
{{- end }}
{{- include "moeserve.modelVolume" . }}
{{- end }}

{{/* Pod-level settings of a pod that runs workers (everything but containers and volumes). */}}
{{- define "moeserve.workersPodSettings" -}}
{{- $w := .Values.workers -}}
serviceAccountName: {{ include "moeserve.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $w.hostIPC }}
hostIPC: true
{{- end }}
{{- if $w.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds }}
{{- with $w.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $w.podSecurityContext | nindent 2 }}
{{- with $w.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The Secret with the internal plane's tokens: the user's, or the chart's. */}}
{{- define "moeserve.internalSecretName" -}}
{{- default (printf "%s-internal" (include "moeserve.fullname" .)) .Values.internalPlane.existingSecret }}
{{- end }}

{{/* The coordinator's view of the Secret: both tokens (the admin token only with Admin on). */}}
{{- define "moeserve.coordinatorSecretsVolume" -}}
- name: coordinator-secrets
  secret:
    secretName: {{ include "moeserve.internalSecretName" . }}
    defaultMode: 0440
    items:
      - key: token
        path: token
      {{- if .Values.internalPlane.admin }}
      - key: admin-token
        path: admin-token
      {{- end }}
{{- end }}

{{/* The workers' view of the Secret: the internal token only, never Admin's. */}}
{{- define "moeserve.workerTokenVolume" -}}
- name: worker-token
  secret:
    secretName: {{ include "moeserve.internalSecretName" . }}
    defaultMode: 0440
    items:
      - key: token
        path: token
{{- end }}

{{/* Selects the pods that run the coordinator: the Deployment's, or the LeaderWorkerSet leaders. */}}
{{- define "moeserve.coordinatorSelectorLabels" -}}
{{ include "moeserve.selectorLabels" . }}
app.kubernetes.io/component: {{ ternary "leader" "coordinator" .Values.leaderWorkerSet.enabled }}
{{- end }}

{{/* One pod that runs workers per node, unless workers.affinity says otherwise. */}}
{{- define "moeserve.workersAffinity" -}}
{{- if .Values.workers.affinity }}
{{- toYaml .Values.workers.affinity }}
{{- else -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          app.kubernetes.io/instance: {{ .Release.Name }}
          app.kubernetes.io/name: {{ include "moeserve.name" . }}
        matchExpressions:
          - key: app.kubernetes.io/component
            operator: In
            values: ["worker", "leader"]
{{- end }}
{{- end }}
