{{/*
Names. Kubernetes names are DNS labels: at most 63 characters.
*/}}
{{- define "labelprob.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "labelprob.fullname" -}}
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

{{/*
The full name plus a suffix, shortened so the whole stays a 63-character DNS label.
Call with (list . "suffix").
*/}}
{{- define "labelprob.suffixedName" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "labelprob.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "labelprob.headlessName" -}}
{{- include "labelprob.suffixedName" (list . "headless") }}
{{- end }}

{{- define "labelprob.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels on every object; selector labels are the immutable subset.
*/}}
{{- define "labelprob.labels" -}}
helm.sh/chart: {{ include "labelprob.chart" . }}
{{ include "labelprob.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: labelprob
{{- end }}

{{/*
Pod-template labels: no chart version, so a chart upgrade that changes nothing in the pod
does not restart every pod.
*/}}
{{- define "labelprob.podLabels" -}}
{{ include "labelprob.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: labelprob
{{- end }}

{{- define "labelprob.selectorLabels" -}}
app.kubernetes.io/name: {{ include "labelprob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "labelprob.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "labelprob.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
GPU mode is decided by engine.device alone.
*/}}
{{- define "labelprob.gpuMode" -}}
{{- if eq .Values.engine.device "cuda" }}true{{ end }}
{{- end }}

{{/*
Image reference: a digest pins it; an empty tag follows appVersion and the device flavour.
*/}}
{{- define "labelprob.image" -}}
{{- $flavour := ternary "cuda" "cpu" (eq .Values.engine.device "cuda") }}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion $flavour) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The model cache folder (LABELPROB_CACHE_DIR). Empty for the embedded model: the image
already holds it pre-converted under its own LABELPROB_CACHE_DIR, and that is read-only.
*/}}
{{- define "labelprob.modelCacheDir" -}}
{{- if .Values.model.cacheDir }}
{{- .Values.model.cacheDir }}
{{- else if .Values.model.name }}
{{- printf "%s/models" (trimSuffix "/" .Values.modelCache.mountPath) }}
{{- end }}
{{- end }}

{{- define "labelprob.templatesConfigMap" -}}
{{- .Values.promptTemplates.existingConfigMap | default (include "labelprob.suffixedName" (list . "templates")) }}
{{- end }}

{{- define "labelprob.cacheClaimName" -}}
{{- .Values.modelCache.persistence.existingClaim | default (include "labelprob.suffixedName" (list . "cache")) }}
{{- end }}

{{- define "labelprob.tensorParallelSize" -}}
{{- if kindIs "invalid" .Values.engine.tensorParallelSize }}
{{- int64 .Values.gpu.count }}
{{- else }}
{{- int64 .Values.engine.tensorParallelSize }}
{{- end }}
{{- end }}

{{/*
Seconds the preStop hook sleeps: 0 when the user brings their own preStop.
*/}}
{{- define "labelprob.preStopSleep" -}}
{{- if (.Values.lifecycle | default dict).preStop }}0{{ else }}{{ int64 .Values.preStopSleepSeconds }}{{ end }}
{{- end }}

{{/*
The kubelet counts the preStop hook inside the grace period: sleep, then drain, then a margin
for the engine to stop.
*/}}
{{- define "labelprob.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int64 (ceil .Values.server.gracePeriodSeconds)) (int64 (include "labelprob.preStopSleep" .)) 15 }}
{{- else }}
{{- int64 .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{- define "labelprob.lifecycle" -}}
{{- $hooks := deepCopy (.Values.lifecycle | default dict) }}
{{- $sleep := int64 (include "labelprob.preStopSleep" .) }}
{{- if gt $sleep 0 }}
{{- /* exec sleep rather than the sleep action: that needs Kubernetes 1.30+ (and a shell-less image has /bin/sleep). */}}
{{- $_ := set $hooks "preStop" (dict "exec" (dict "command" (list "sleep" (toString $sleep)))) }}
{{- end }}
{{- if $hooks }}
{{- toYaml $hooks }}
{{- end }}
{{- end }}

{{- define "labelprob.startupBudgetSeconds" -}}
{{- mul (int64 .Values.probes.startup.failureThreshold) (int64 .Values.probes.startup.periodSeconds) }}
{{- end }}

{{/*
A rollout may take the whole startup budget after the image pull and model download; the
Deployment's default 600 s deadline would report it failed first.
*/}}
{{- define "labelprob.progressDeadlineSeconds" -}}
{{- if kindIs "invalid" .Values.progressDeadlineSeconds }}
{{- add (int64 (include "labelprob.startupBudgetSeconds" .)) 600 }}
{{- else }}
{{- int64 .Values.progressDeadlineSeconds }}
{{- end }}
{{- end }}

{{/*
Update strategy; Recreate takes no rollingUpdate block.
*/}}
{{- define "labelprob.strategy" -}}
{{- $strategy := deepCopy (.Values.strategy | default dict) }}
{{- if eq ($strategy.type | default "RollingUpdate") "Recreate" }}
{{- $strategy = omit $strategy "rollingUpdate" }}
{{- end }}
{{- if $strategy }}
{{- toYaml $strategy }}
{{- end }}
{{- end }}

{{/*
Whether an update starts a new pod before an old one stops (RollingUpdate's maxSurge
defaults to 25%, which rounds up to one pod).
*/}}
{{- define "labelprob.surges" -}}
{{- $strategy := .Values.strategy | default dict }}
{{- if ne ($strategy.type | default "RollingUpdate") "Recreate" }}
{{- $rolling := $strategy.rollingUpdate | default dict }}
{{- $surge := hasKey $rolling "maxSurge" | ternary (toString $rolling.maxSurge) "25%" }}
{{- if not (has $surge (list "0" "0%")) }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Most pods that can run at once, outside updates.
*/}}
{{- define "labelprob.maxReplicas" -}}
{{- if .Values.keda.enabled }}
{{- int64 .Values.keda.maxReplicaCount }}
{{- else if .Values.autoscaling.enabled }}
{{- int64 .Values.autoscaling.maxReplicas }}
{{- else }}
{{- int64 .Values.replicaCount }}
{{- end }}
{{- end }}

{{/*
Cross-field checks the schema cannot phrase clearly. Included by the Deployment, so
every render runs them.
*/}}
{{- define "labelprob.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive: KEDA creates its own HorizontalPodAutoscaler. Enable only one." }}
{{- end }}
{{- if and .Values.keda.enabled (not .Values.keda.prometheus.serverAddress) }}
{{- fail "keda.prometheus.serverAddress is required when keda.enabled is true (e.g. http://prometheus-operated.monitoring.svc:9090)." }}
{{- end }}
{{- if and (eq (int64 .Values.server.metricsPort) 0) (or .Values.metrics.serviceMonitor.enabled .Values.keda.enabled) }}
{{- fail "server.metricsPort is 0 (metrics off), but metrics.serviceMonitor.enabled or keda.enabled needs the metrics endpoint." }}
{{- end }}
{{- if and .Values.autoscaling.enabled (kindIs "invalid" .Values.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" .Values.autoscaling.targetMemoryUtilizationPercentage) (kindIs "invalid" .Values.autoscaling.targetInflightReads) }}
{{- fail "autoscaling.enabled needs at least one target: targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or targetInflightReads." }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.secretName is required when tls.enabled is true." }}
{{- end }}
{{- if and .Values.promptTemplates.enabled (not .Values.promptTemplates.existingConfigMap) (not .Values.promptTemplates.content) }}
{{- fail "promptTemplates.enabled needs promptTemplates.content or promptTemplates.existingConfigMap." }}
{{- end }}
{{- if and (include "labelprob.gpuMode" .) (gt (int64 (include "labelprob.tensorParallelSize" .)) (int64 .Values.gpu.count)) }}
{{- fail "engine.tensorParallelSize cannot exceed gpu.count: each tensor-parallel rank needs its own GPU." }}
{{- end }}
{{- $p := .Values.modelCache.persistence }}
{{- if and $p.enabled (not (has "ReadWriteMany" $p.accessModes)) (not (include "labelprob.perPodClaims" .)) }}
{{- $max := int64 (include "labelprob.maxReplicas" .) }}
{{- if gt $max 1 }}
{{- fail (printf "modelCache.persistence: a %s claim attaches to one node only, but up to %d replicas may run (replicaCount or autoscaling); pods on other nodes would fail with Multi-Attach errors. Use statefulSet.enabled=true (one claim per replica), modelCache.persistence.accessModes=[ReadWriteMany] with a storage class that supports it, or disable persistence." (join "/" $p.accessModes) $max) }}
{{- end }}
{{- if and (include "labelprob.surges" .) (not .Values.statefulSet.enabled) }}
{{- fail (printf "modelCache.persistence: a %s claim cannot be shared by the old and the new pod of a rolling update with maxSurge > 0 (Multi-Attach error). Set strategy.type=Recreate, or strategy.rollingUpdate.maxSurge=0 with maxUnavailable=1, or use a ReadWriteMany claim." (join "/" $p.accessModes)) }}
{{- end }}
{{- end }}
{{- if and .Values.keda.enabled (eq (int64 .Values.keda.minReplicaCount) 0) (not .Values.keda.extraTriggers) }}
{{- fail "keda.minReplicaCount 0 can never scale back up: the queue-depth trigger reads a metric the pods export, and with no pod there is none. Keep keda.minReplicaCount >= 1, or add keda.extraTriggers measured outside the pods (a message queue, a gateway's request rate, a cron schedule)." }}
{{- end }}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- $needed := add (int64 (ceil .Values.server.gracePeriodSeconds)) (int64 (include "labelprob.preStopSleep" .)) }}
{{- if lt (int64 .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) is shorter than preStopSleepSeconds + server.gracePeriodSeconds (%d): the pod would be killed before it finishes draining." (int64 .Values.terminationGracePeriodSeconds) $needed) }}
{{- end }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.progressDeadlineSeconds)) (lt (int64 .Values.progressDeadlineSeconds) (int64 (include "labelprob.startupBudgetSeconds" .))) }}
{{- fail (printf "progressDeadlineSeconds (%d) is shorter than the startup probe budget (%ss): rollouts would be reported failed while pods are still starting." (int64 .Values.progressDeadlineSeconds) (include "labelprob.startupBudgetSeconds" .)) }}
{{- end }}
{{- if and (not (include "labelprob.gpuMode" .)) (not (kindIs "invalid" .Values.engine.cpu.reservedCpus)) (ne .Values.engine.cpu.ompThreadsBind "auto") }}
{{- fail "engine.cpu.reservedCpus only takes effect with engine.cpu.ompThreadsBind=auto (vLLM reserves cores only when it picks them itself)." }}
{{- end }}
{{- include "labelprob.validateMemory" . }}
{{- if .Values.metrics.serviceMonitor.enabled }}
{{- include "labelprob.requireApi" (list . "metrics.serviceMonitor.enabled" "monitoring.coreos.com/v1/ServiceMonitor" "prometheus-operator (or kube-prometheus-stack)") }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- include "labelprob.requireApi" (list . "keda.enabled" "keda.sh/v1alpha1/ScaledObject" "KEDA") }}
{{- end }}
{{- if .Values.grpcRoute.enabled }}
{{- include "labelprob.requireApi" (list . "grpcRoute.enabled" "gateway.networking.k8s.io/v1/GRPCRoute" "the Gateway API CRDs (standard channel, v1.1 or later)") }}
{{- end }}
{{- if and .Values.grpcRoute.enabled (not .Values.grpcRoute.parentRefs) }}
{{- fail "grpcRoute.parentRefs is required when grpcRoute.enabled is true: the Gateway (and listener) the route attaches to, e.g. [{name: my-gateway, namespace: gateway-system}]." }}
{{- end }}
{{- end }}

{{/*
A CRD-based object renders only where the cluster serves its API: without the CRD the
install would fail half-way (or, offline, produce an object nothing reads).
Call with (list . "value enabling it" "group/version/Kind" "what installs the CRD").
*/}}
{{- define "labelprob.requireApi" -}}
{{- $ctx := index . 0 }}
{{- $api := index . 2 }}
{{- if and $ctx.Values.capabilityChecks (not ($ctx.Capabilities.APIVersions.Has $api)) }}
{{- fail (printf "%s needs the %s API, which this cluster does not serve: install %s first. helm template sees no cluster: pass --api-versions %s. To render it anyway (e.g. the CRDs are installed in the same sync), set capabilityChecks=false." (index . 1) $api (index . 3) $api) }}
{{- end }}
{{- end }}

{{/*
Probe handler. Kubelet gRPC probes speak plaintext only, so with TLS the probes run
grpc_health_probe (shipped in the image) against localhost instead.
*/}}
{{- define "labelprob.probeHandler" -}}
{{- if .Values.tls.enabled }}
exec:
  command:
    - {{ .Values.probes.healthProbeBinary }}
    - -addr=127.0.0.1:{{ int64 .Values.server.port }}
    - -service={{ .Values.probes.service }}
    - -connect-timeout=3s
    - -rpc-timeout=3s
    - -tls
    - -tls-no-verify
    {{- if .Values.tls.clientAuth }}
    - -tls-client-cert=/etc/labelprob/tls/tls.crt
    - -tls-client-key=/etc/labelprob/tls/tls.key
    {{- end }}
{{- else }}
grpc:
  port: {{ int64 .Values.server.port }}
  service: {{ .Values.probes.service | quote }}
{{- end }}
{{- end }}

{{/*
Server settings as LABELPROB_* variables (the CLI reads each flag's env fallback), plus the
writable locations vLLM, Hugging Face and torch need under a read-only root filesystem.
*/}}
{{- define "labelprob.chartEnv" -}}
{{- $cache := trimSuffix "/" .Values.modelCache.mountPath }}
{{- $gpu := include "labelprob.gpuMode" . }}
- name: HOME
  value: {{ $cache | quote }}
- name: XDG_CACHE_HOME
  value: {{ $cache | quote }}
- name: HF_HOME
  value: {{ printf "%s/huggingface" $cache | quote }}
- name: VLLM_CACHE_ROOT
  value: {{ printf "%s/vllm" $cache | quote }}
- name: TRITON_CACHE_DIR
  value: {{ printf "%s/triton" $cache | quote }}
- name: TORCHINDUCTOR_CACHE_DIR
  value: {{ printf "%s/torchinductor" $cache | quote }}
- name: TMPDIR
  value: /tmp
# No usage telemetry from a server that may handle private texts.
- name: VLLM_NO_USAGE_STATS
  value: "1"
- name: DO_NOT_TRACK
  value: "1"
{{- with include "labelprob.modelCacheDir" . }}
- name: LABELPROB_CACHE_DIR
  value: {{ . | quote }}
{{- end }}
{{- with .Values.model.name }}
- name: LABELPROB_MODEL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.model.offline }}
- name: HF_HUB_OFFLINE
  value: "1"
{{- end }}
{{- with .Values.model.hfToken.secretName }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.model.hfToken.secretKey }}
{{- end }}
- name: LABELPROB_DEVICE
  value: {{ .Values.engine.device | quote }}
- name: LABELPROB_DTYPE
  value: {{ .Values.engine.dtype | quote }}
{{- if not (kindIs "invalid" .Values.engine.maxModelLen) }}
- name: LABELPROB_MAX_MODEL_LEN
  value: {{ int64 .Values.engine.maxModelLen | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.engine.blockSize) }}
- name: LABELPROB_BLOCK_SIZE
  value: {{ int64 .Values.engine.blockSize | quote }}
{{- end }}
- name: LABELPROB_MAX_NUM_SEQS
  value: {{ int64 .Values.engine.maxNumSeqs | quote }}
- name: LABELPROB_SEED
  value: {{ int64 .Values.engine.seed | quote }}
- name: LABELPROB_ENFORCE_EAGER
  value: {{ .Values.engine.enforceEager | quote }}
{{- if $gpu }}
- name: LABELPROB_GPU_MEMORY_UTILIZATION
  value: {{ .Values.engine.gpuMemoryUtilization | toString | quote }}
- name: LABELPROB_TENSOR_PARALLEL_SIZE
  value: {{ include "labelprob.tensorParallelSize" . | quote }}
{{- else }}
- name: LABELPROB_KV_CACHE_GIB
  value: {{ int64 .Values.engine.kvCacheGiB | quote }}
{{- with .Values.engine.cpu.ompThreadsBind }}
- name: VLLM_CPU_OMP_THREADS_BIND
  value: {{ . | quote }}
{{- end }}
{{- if eq .Values.engine.cpu.ompThreadsBind "nobind" }}
- name: OMP_NUM_THREADS
  value: {{ include "labelprob.ompNumThreads" . | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.engine.cpu.reservedCpus) }}
- name: VLLM_CPU_NUM_OF_RESERVED_CPU
  value: {{ int64 .Values.engine.cpu.reservedCpus | quote }}
{{- end }}
{{- end }}
# Every address family: IPv4, IPv6 and dual-stack clusters.
- name: LABELPROB_HOST
  value: "[::]"
- name: LABELPROB_PORT
  value: {{ int64 .Values.server.port | quote }}
- name: LABELPROB_METRICS_PORT
  value: {{ int64 .Values.server.metricsPort | quote }}
- name: LABELPROB_MAX_LABELS
  value: {{ int64 .Values.server.maxLabels | quote }}
- name: LABELPROB_MAX_BATCH_TEXTS
  value: {{ int64 .Values.server.maxBatchTexts | quote }}
- name: LABELPROB_MAX_TEXT_CHARS
  value: {{ int64 .Values.server.maxTextChars | quote }}
- name: LABELPROB_MAX_MESSAGE_BYTES
  value: {{ int64 .Values.server.maxMessageBytes | quote }}
- name: LABELPROB_MAX_INFLIGHT_READS
  value: {{ int64 .Values.server.maxInflightReads | quote }}
- name: LABELPROB_DEFAULT_CALIBRATION
  value: {{ .Values.server.defaultCalibration | quote }}
- name: LABELPROB_DEFAULT_TRUNCATION
  value: {{ .Values.server.defaultTruncation | quote }}
- name: LABELPROB_GRACE_PERIOD
  value: {{ .Values.server.gracePeriodSeconds | toString | quote }}
- name: LABELPROB_LOG_LEVEL
  value: {{ .Values.server.logLevel | quote }}
- name: LABELPROB_LOG_TEXT
  value: {{ .Values.server.logText | quote }}
{{- if .Values.promptTemplates.enabled }}
- name: LABELPROB_TEMPLATES_FILE
  value: {{ printf "/etc/labelprob/templates/%s" .Values.promptTemplates.key | quote }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: LABELPROB_TLS_CERT
  value: /etc/labelprob/tls/tls.crt
- name: LABELPROB_TLS_KEY
  value: /etc/labelprob/tls/tls.key
{{- if .Values.tls.clientAuth }}
- name: LABELPROB_TLS_CLIENT_CA
  value: {{ printf "/etc/labelprob/tls-client-ca/%s" .Values.tls.clientCAKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The chart's variables, then extraEnv; an extraEnv entry replaces the chart's variable of the
same name (duplicate keys would leave the winner to the API server's merge).
*/}}
{{- define "labelprob.env" -}}
{{- $extra := .Values.extraEnv | default list }}
{{- $names := dict }}
{{- range $extra }}
{{- $_ := set $names .name true }}
{{- end }}
{{- $env := list }}
{{- range (include "labelprob.chartEnv" . | fromYamlArray) }}
{{- if not (hasKey $names .name) }}
{{- $env = append $env . }}
{{- end }}
{{- end }}
{{- toYaml (concat $env $extra) }}
{{- end }}

{{/*
Resources; GPU mode adds the GPU count to limits (requests default to limits for
extended resources).
*/}}
{{- define "labelprob.resources" -}}
{{- $res := deepCopy (.Values.resources | default dict) }}
{{- if include "labelprob.gpuMode" . }}
{{- $limits := get $res "limits" | default dict }}
{{- $_ := set $limits .Values.gpu.resourceName (int64 .Values.gpu.count) }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- if .Values.ephemeralStorage.enabled }}
{{- $disk := include "labelprob.diskEmptyDirBytes" . | int64 }}
{{- $headroom := include "labelprob.bytes" .Values.ephemeralStorage.headroom | int64 }}
{{- $requests := get $res "requests" | default dict }}
{{- $limits := get $res "limits" | default dict }}
{{- if not (hasKey $requests "ephemeral-storage") }}
{{- $_ := set $requests "ephemeral-storage" (include "labelprob.mebibytes" $disk) }}
{{- end }}
{{- if not (hasKey $limits "ephemeral-storage") }}
{{- $_ := set $limits "ephemeral-storage" (include "labelprob.mebibytes" (add $disk $headroom)) }}
{{- end }}
{{- $_ := set $res "requests" $requests }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/*
A Kubernetes quantity (8Gi, 512Mi, 20G, 1073741824) in bytes.
*/}}
{{- define "labelprob.bytes" -}}
{{- $q := toString . }}
{{- $factor := 1.0 }}
{{- $units := dict "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 }}
{{- range $suffix, $unit := $units }}
{{- if hasSuffix $suffix $q }}
{{- $q = trimSuffix $suffix $q }}
{{- $factor = $unit }}
{{- end }}
{{- end }}
{{- mulf (float64 $q) $factor | ceil | int64 }}
{{- end }}

{{/*
Bytes as whole mebibytes, rounded up.
*/}}
{{- define "labelprob.mebibytes" -}}
{{- printf "%dMi" (div (add (int64 .) 1048575) 1048576) }}
{{- end }}

{{/*
Disk-backed emptyDirs of the pod: /tmp, and the cache unless it is a claim.
*/}}
{{- define "labelprob.diskEmptyDirBytes" -}}
{{- $bytes := include "labelprob.bytes" .Values.tmpSizeLimit | int64 }}
{{- if not .Values.modelCache.persistence.enabled }}
{{- $bytes = add $bytes (include "labelprob.bytes" .Values.modelCache.emptyDir.sizeLimit | int64) }}
{{- end }}
{{- $bytes }}
{{- end }}

{{/*
Size of the memory-backed /dev/shm: GPU workers (NCCL) need more than CPU ones.
*/}}
{{- define "labelprob.sharedMemorySize" -}}
{{- if include "labelprob.gpuMode" . }}{{ .Values.gpu.sharedMemorySize }}{{ else }}{{ .Values.engine.cpu.sharedMemorySize }}{{ end }}
{{- end }}

{{/*
Scheduling: GPU mode adds its node selector and tolerations to the general ones.
*/}}
{{- define "labelprob.nodeSelector" -}}
{{- $sel := deepCopy (.Values.nodeSelector | default dict) }}
{{- if include "labelprob.gpuMode" . }}
{{- $sel = merge $sel (.Values.gpu.nodeSelector | default dict) }}
{{- end }}
{{- if $sel }}
{{- toYaml $sel }}
{{- end }}
{{- end }}

{{- define "labelprob.tolerations" -}}
{{- $tol := .Values.tolerations | default list }}
{{- if include "labelprob.gpuMode" . }}
{{- $tol = concat $tol (.Values.gpu.tolerations | default list) }}
{{- end }}
{{- toYaml $tol }}
{{- end }}

{{/*
Pod annotations: a config checksum, Prometheus discovery, then the user's own.
*/}}
{{- define "labelprob.podAnnotations" -}}
{{- $ann := dict }}
{{- if .Values.promptTemplates.enabled }}
{{- /* Roll the pods when the templates change: the server reads the file at start. */}}
{{- $_ := set $ann "checksum/templates" (.Values.promptTemplates | toJson | sha256sum) }}
{{- end }}
{{- if and .Values.metrics.scrapeAnnotations (gt (int64 .Values.server.metricsPort) 0) }}
{{- $_ := set $ann "prometheus.io/scrape" "true" }}
{{- $_ := set $ann "prometheus.io/port" (toString (int64 .Values.server.metricsPort)) }}
{{- $_ := set $ann "prometheus.io/path" "/metrics" }}
{{- end }}
{{- $ann = merge (deepCopy (.Values.podAnnotations | default dict)) $ann }}
{{- if $ann }}
{{- toYaml $ann }}
{{- end }}
{{- end }}

{{/*
KEDA query: total queue depth over this release's pods (Deployment pods are named
<fullname>-<replicaset hash>-<suffix>, StatefulSet pods <fullname>-<ordinal>). Override
with keda.prometheus.query (templated).
*/}}
{{- define "labelprob.kedaQuery" -}}
{{- if .Values.keda.prometheus.query }}
{{- tpl .Values.keda.prometheus.query . }}
{{- else }}
{{- $pods := ternary "[0-9]+" "[a-z0-9]+-[a-z0-9]+" .Values.statefulSet.enabled }}
{{- printf "sum(labelprob_inflight_reads{namespace=\"%s\",pod=~\"%s-%s\"})" .Release.Namespace (include "labelprob.fullname" .) $pods }}
{{- end }}
{{- end }}

{{/*
Topology spread: a constraint without labelSelector spreads this release's pods.
*/}}
{{- define "labelprob.topologySpreadConstraints" -}}
{{- $selector := dict "matchLabels" (include "labelprob.selectorLabels" . | fromYaml) }}
{{- $out := list }}
{{- range .Values.topologySpreadConstraints }}
{{- $out = append $out (merge (deepCopy .) (dict "labelSelector" $selector)) }}
{{- end }}
{{- if $out }}
{{- toYaml $out }}
{{- end }}
{{- end }}

{{/*
OpenMP threads for unpinned CPU engines: as many as the CPU the pod may use (limit, else
request), rounded down, so the engine neither oversubscribes a shared node nor idles its share.
*/}}
{{- define "labelprob.ompNumThreads" -}}
{{- if not (kindIs "invalid" .Values.engine.cpu.ompNumThreads) }}
{{- int64 .Values.engine.cpu.ompNumThreads }}
{{- else }}
{{- $res := .Values.resources | default dict }}
{{- $cpu := (get ($res.limits | default dict) "cpu") | default (get ($res.requests | default dict) "cpu") | default 1 | toString }}
{{- $cores := 0.0 }}
{{- if hasSuffix "m" $cpu }}
{{- $cores = divf (trimSuffix "m" $cpu | float64) 1000 }}
{{- else }}
{{- $cores = float64 $cpu }}
{{- end }}
{{- /* Whole CPUs only: a thread more than the quota is throttled every period. */}}
{{- max 1 (int64 (floor $cores)) }}
{{- end }}
{{- end }}

{{/*
CPU mode allocates the whole KV cache at start: a memory limit (else request) below it plus
the model and runtime would be OOM-killed before serving.
*/}}
{{- define "labelprob.validateMemory" -}}
{{- if not (include "labelprob.gpuMode" .) }}
{{- $res := .Values.resources | default dict }}
{{- $field := "limits" }}
{{- $memory := get ($res.limits | default dict) "memory" }}
{{- if not $memory }}
{{- $field = "requests" }}
{{- $memory = get ($res.requests | default dict) "memory" }}
{{- end }}
{{- if $memory }}
{{- $gib := 1073741824.0 }}
{{- $needed := addf (int64 .Values.engine.kvCacheGiB) .Values.engine.cpu.memoryOverheadGiB }}
{{- $have := divf (include "labelprob.bytes" $memory | float64) $gib }}
{{- if lt $have $needed }}
{{- fail (printf "resources.%s.memory (%v) is below engine.kvCacheGiB (%d GiB, allocated at start) + engine.cpu.memoryOverheadGiB (%v GiB: weights, runtime, compile): the pod would be OOM-killed before serving. Set resources.%s.memory to at least %vGi, or lower engine.kvCacheGiB." $field $memory (int64 .Values.engine.kvCacheGiB) .Values.engine.cpu.memoryOverheadGiB $field $needed) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
One cache claim per replica: a StatefulSet with persistence and no existing claim.
*/}}
{{- define "labelprob.perPodClaims" -}}
{{- if and .Values.statefulSet.enabled .Values.modelCache.persistence.enabled (not .Values.modelCache.persistence.existingClaim) }}true{{ end }}
{{- end }}

{{- define "labelprob.workloadKind" -}}
{{- ternary "StatefulSet" "Deployment" .Values.statefulSet.enabled }}
{{- end }}
