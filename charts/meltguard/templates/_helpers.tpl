{{/* Chart name, overridable. */}}
{{- define "meltguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object's name; leaves room for a component suffix within 63 chars. */}}
{{- define "meltguard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "meltguard.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: (dict "ctx" $ "component" "operator") */}}
{{- define "meltguard.componentName" -}}
{{- printf "%s-%s" (include "meltguard.fullname" .ctx) .component -}}
{{- end -}}

{{/*
Selector labels of one component. app.kubernetes.io/name is "<chart>-<component>", so the
exporter pods carry app.kubernetes.io/name=meltguard-exporter, the selector an ImageQuotaPolicy
uses by default (spec.telemetry.exporter.selector in docs/design.md).
*/}}
{{- define "meltguard.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-%s" (include "meltguard.name" .ctx) .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All standard labels of one component's objects. */}}
{{- define "meltguard.labels" -}}
{{ include "meltguard.selectorLabels" . }}
app.kubernetes.io/part-of: meltguard
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The one image of all three parts. */}}
{{- define "meltguard.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount name of a component whose values hold serviceAccount.{create,name}. */}}
{{- define "meltguard.serviceAccountName" -}}
{{- $sa := .values.serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "meltguard.componentName" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/*
"true" when a monitoring object should render: (dict "ctx" $ "setting" "auto|true|false"
"api" "monitoring.coreos.com/v1/ServiceMonitor"). "auto" asks the cluster (.Capabilities).
*/}}
{{- define "meltguard.monitoringEnabled" -}}
{{- if eq (toString .setting) "auto" -}}
{{- .ctx.Capabilities.APIVersions.Has .api | toString -}}
{{- else -}}
{{- .setting | toString -}}
{{- end -}}
{{- end -}}

{{/* Pod-level fields shared by the three parts: pull secrets and scheduling. */}}
{{- define "meltguard.podScheduling" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The pod template's metadata of one component; .extraLabels (optional) are added. */}}
{{- define "meltguard.podMetadata" -}}
metadata:
  labels:
    {{- include "meltguard.labels" . | nindent 4 }}
    {{- with .extraLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with .values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Image, pull policy and the hardened container securityContext. */}}
{{- define "meltguard.containerBase" -}}
image: {{ include "meltguard.image" .ctx }}
imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .ctx.Values.containerSecurityContext | nindent 2 }}
resources:
  {{- toYaml .values.resources | nindent 2 }}
{{- end -}}

{{/* An HTTP probe on a named port: (dict "path" "/healthz" "port" "health" "period" 10) */}}
{{- define "meltguard.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
periodSeconds: {{ .period | default 10 }}
timeoutSeconds: 3
failureThreshold: {{ .failures | default 3 }}
{{- end -}}

{{/* One alert's labels and annotations: severity, the chart's extra labels, and runbook_url
anchored at the alert's section of docs/runbook.md. */}}
{{- define "meltguard.alertMeta" -}}
labels:
  severity: {{ .severity }}
  {{- with .ctx.Values.alerts.labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  summary: {{ .summary | quote }}
  description: {{ .description | quote }}
  runbook_url: {{ printf "%s#%s" .ctx.Values.alerts.runbookBaseUrl (lower .alert) | quote }}
{{- end -}}

{{/*
The namespaces whose quota ConfigMaps the quota server watches: quotaServer.limits.watchNamespace,
else where the operator writes them (the namespaces of its shards, or "*" for all namespaces).
*/}}
{{- define "meltguard.quotaWatchNamespaces" -}}
{{- $operatorNamespaces := list -}}
{{- range include "meltguard.operatorShards" . | fromJsonArray }}
{{- $operatorNamespaces = concat $operatorNamespaces .namespaces -}}
{{- end }}
{{- default (empty $operatorNamespaces | ternary "*" (join "," $operatorNamespaces)) .Values.quotaServer.limits.watchNamespace -}}
{{- end }}
