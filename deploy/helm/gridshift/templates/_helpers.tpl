{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "gridshift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, unless the release name holds the chart name. */}}
{{- define "gridshift.fullname" -}}
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

{{- define "gridshift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gridshift.labels" -}}
helm.sh/chart: {{ include "gridshift.chart" . }}
app.kubernetes.io/name: {{ include "gridshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one part; call with (dict "ctx" $ "component" "scheduler"). */}}
{{- define "gridshift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gridshift.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "gridshift.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gridshift.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gridshift.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "gridshift.secretName" -}}
{{- default (printf "%s-secrets" (include "gridshift.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{/* The settings of one part: the shared config with the part's own merged over it. */}}
{{- define "gridshift.partConfig" -}}
{{- $cfg := mustMergeOverwrite (deepCopy .ctx.Values.config) (deepCopy .part.config) }}
{{- toYaml $cfg }}
{{- end }}

{{/* Environment common to both parts. */}}
{{- define "gridshift.env" -}}
- name: GRIDSHIFT_API__HOST
  value: "0.0.0.0"
- name: GRIDSHIFT_API__PORT
  value: {{ .part.port | quote }}
- name: GRIDSHIFT_STATE_DIR
  value: /var/lib/gridshift
{{- with .part.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gridshift.envFrom" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.env }}
envFrom:
  - secretRef:
      name: {{ include "gridshift.secretName" . }}
{{- end }}
{{- end }}

{{- define "gridshift.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .part.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Probes against the agent's health endpoint. */}}
{{- define "gridshift.probes" -}}
readinessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 5
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  initialDelaySeconds: 20
  periodSeconds: 30
  timeoutSeconds: 5
  failureThreshold: 4
{{- end }}
