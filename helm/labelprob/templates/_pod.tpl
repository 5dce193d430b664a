{{/*
The pod template shared by the Deployment and the StatefulSet.
*/}}
{{- define "labelprob.podTemplate" -}}
metadata:
  {{- with include "labelprob.podAnnotations" . }}
  annotations:
    {{- . | nindent 4 }}
  {{- end }}
  labels:
    {{- include "labelprob.podLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "labelprob.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  # No {SERVICE}_PORT variables: a Service named like the app would set LABELPROB_PORT.
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ include "labelprob.terminationGracePeriodSeconds" . }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- with .Values.initContainers }}
  initContainers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: server
      image: {{ include "labelprob.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- with .Values.extraArgs }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: grpc
          containerPort: {{ int64 .Values.server.port }}
          protocol: TCP
        {{- if gt (int64 .Values.server.metricsPort) 0 }}
        - name: metrics
          containerPort: {{ int64 .Values.server.metricsPort }}
          protocol: TCP
        {{- end }}
      env:
        {{- include "labelprob.env" . | trim | nindent 8 }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      startupProbe:
        {{- include "labelprob.probeHandler" . | trim | nindent 8 }}
        {{- toYaml .Values.probes.startup | nindent 8 }}
      readinessProbe:
        {{- include "labelprob.probeHandler" . | trim | nindent 8 }}
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      livenessProbe:
        {{- include "labelprob.probeHandler" . | trim | nindent 8 }}
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      {{- with include "labelprob.lifecycle" . }}
      lifecycle:
        {{- . | nindent 8 }}
      {{- end }}
      resources:
        {{- include "labelprob.resources" . | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: cache
          mountPath: {{ .Values.modelCache.mountPath }}
        - name: dshm
          mountPath: /dev/shm
        {{- if .Values.promptTemplates.enabled }}
        - name: templates
          mountPath: /etc/labelprob/templates
          readOnly: true
        {{- end }}
        {{- if .Values.tls.enabled }}
        - name: tls
          mountPath: /etc/labelprob/tls
          readOnly: true
        {{- if .Values.tls.clientAuth }}
        - name: tls-client-ca
          mountPath: /etc/labelprob/tls-client-ca
          readOnly: true
        {{- end }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- with .Values.extraContainers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
    {{- if not (include "labelprob.perPodClaims" .) }}
    - name: cache
      {{- if .Values.modelCache.persistence.enabled }}
      persistentVolumeClaim:
        claimName: {{ include "labelprob.cacheClaimName" . }}
      {{- else }}
      emptyDir:
        sizeLimit: {{ .Values.modelCache.emptyDir.sizeLimit }}
      {{- end }}
    {{- end }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ include "labelprob.sharedMemorySize" . }}
    {{- if .Values.promptTemplates.enabled }}
    - name: templates
      configMap:
        name: {{ include "labelprob.templatesConfigMap" . }}
        items:
          - key: {{ .Values.promptTemplates.key }}
            path: {{ .Values.promptTemplates.key }}
    {{- end }}
    {{- if .Values.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ .Values.tls.secretName }}
        defaultMode: 0440
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
    {{- if .Values.tls.clientAuth }}
    - name: tls-client-ca
      secret:
        secretName: {{ .Values.tls.clientCASecretName | default .Values.tls.secretName }}
        defaultMode: 0440
        items:
          - key: {{ .Values.tls.clientCAKey }}
            path: {{ .Values.tls.clientCAKey }}
    {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with (include "labelprob.nodeSelector" . | fromYaml) }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (include "labelprob.tolerations" . | fromYamlArray) }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "labelprob.topologySpreadConstraints" . }}
  topologySpreadConstraints:
    {{- . | nindent 4 }}
  {{- end }}
{{- end }}
