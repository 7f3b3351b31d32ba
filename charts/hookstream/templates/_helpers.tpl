{{/*
Names, labels and small computed values shared by the templates.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "hookstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Base name for every object: fullnameOverride, else the release name when it already contains
the chart name (release "hookstream" gives "hookstream"), else "<release>-<chart>".
*/}}
{{- define "hookstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hookstream.operator.fullname" -}}
{{- printf "%s-operator" (include "hookstream.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hookstream.gateway.fullname" -}}
{{- printf "%s-gateway" (include "hookstream.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret the operator writes the compiled gateway config into (key config.json). */}}
{{- define "hookstream.configSecretName" -}}
{{- default (printf "%s-gateway-config" (include "hookstream.fullname" .)) .Values.configSecret.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hookstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "hookstream.labels" -}}
helm.sh/chart: {{ include "hookstream.chart" . }}
app.kubernetes.io/name: {{ include "hookstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hookstream
{{- end -}}

{{/*
Component labels and selector labels. Call with (dict "ctx" $ "component" "operator").
Selector labels never include the version, so that upgrades keep matching the same pods.
*/}}
{{- define "hookstream.componentLabels" -}}
{{ include "hookstream.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hookstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookstream.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* image reference for a component's image values; the tag defaults to the appVersion. */}}
{{- define "hookstream.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Whether the gateway's database is SQLite (a URL from a Secret is taken to be PostgreSQL). */}}
{{- define "hookstream.database.isSqlite" -}}
{{- if and (not .Values.database.existingSecret) (hasPrefix "sqlite:" .Values.database.url) -}}
true
{{- end -}}
{{- end -}}

{{- define "hookstream.database.claimName" -}}
{{- default (printf "%s-data" (include "hookstream.gateway.fullname" .)) .Values.database.persistence.existingClaim -}}
{{- end -}}

{{/*
Base URL the operator writes into Sources' status: operator.ingestBaseUrl when set, else the
Ingress host when the Ingress is enabled (https when it has TLS), else the gateway Service.
*/}}
{{- define "hookstream.ingestBaseUrl" -}}
{{- if .Values.operator.ingestBaseUrl -}}
{{- .Values.operator.ingestBaseUrl | trimSuffix "/" -}}
{{- else if .Values.ingress.enabled -}}
{{- $host := required "ingress.host is required when ingress.enabled is true" .Values.ingress.host -}}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) $host -}}
{{- else -}}
{{- $port := int .Values.gateway.service.port -}}
{{- if eq $port 80 -}}
{{- printf "http://%s.%s.svc" (include "hookstream.gateway.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "hookstream.gateway.fullname" .) .Release.Namespace $port -}}
{{- end -}}
{{- end -}}
{{- end -}}
