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

{{/*
The gateway's database: "postgres" when database.existingSecret is set (its URL is taken to be
postgres:// or postgresql://) or database.url starts with postgres:// or postgresql://,
"sqlite" when database.url starts with sqlite://; any other URL is refused.
*/}}
{{- define "hookstream.database.kind" -}}
{{- $url := .Values.database.url | default "" | trim -}}
{{- if .Values.database.existingSecret -}}
postgres
{{- else if or (hasPrefix "postgres://" $url) (hasPrefix "postgresql://" $url) -}}
postgres
{{- else if hasPrefix "sqlite://" $url -}}
sqlite
{{- else -}}
{{- fail (printf "database.url %q is not a database URL the gateway accepts: use sqlite://PATH (one replica, on the persistent volume at /data), postgres://... or postgresql://..., or set database.existingSecret to a Secret holding a PostgreSQL URL" $url) -}}
{{- end -}}
{{- end -}}

{{/* Whether the gateway's database is SQLite: "true" or empty. */}}
{{- define "hookstream.database.isSqlite" -}}
{{- if eq (include "hookstream.database.kind" .) "sqlite" -}}
true
{{- end -}}
{{- end -}}

{{/*
A duration as the gateway writes it (500ms, 30s, 5m, 1h30m, 1d) in whole milliseconds. Call
with (dict "value" "25s" "name" "gateway.shutdownGrace"); refuses anything else by name.
*/}}
{{- define "hookstream.durationMillis" -}}
{{- $text := .value | toString | nospace -}}
{{- if not (regexMatch "^([0-9]+(ms|s|m|h|d))+$" $text) -}}
{{- fail (printf "%s %q is not a duration: write it like 25s, 1m or 1m30s" .name (.value | toString)) -}}
{{- end -}}
{{- $units := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000 -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d)" $text -1 -}}
{{- $unit := regexFind "(ms|s|m|h|d)$" . -}}
{{- $total = add $total (mul (atoi (trimSuffix $unit .)) (get $units $unit)) -}}
{{- end -}}
{{- $total -}}
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

{{/*
The namespaces the operator watches (watchNamespaces), each once, as a YAML list; empty for
all namespaces. Refuses a name that is not a namespace name.
*/}}
{{- define "hookstream.watchNamespaces" -}}
{{- $out := list -}}
{{- range (.Values.watchNamespaces | default list) -}}
{{- $ns := toString . -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" $ns) -}}
{{- fail (printf "watchNamespaces: %q is not a namespace name (a DNS label, like team-a)" $ns) -}}
{{- end -}}
{{- $out = append $out $ns -}}
{{- end -}}
{{- $out | uniq | sortAlpha | toYaml -}}
{{- end -}}

{{/*
Name of the operator's Role in the release namespace (config Secret and Lease): the operator's
name, or <name>-config when the release namespace is also watched and holds the watch Role.
*/}}
{{- define "hookstream.operator.configRoleName" -}}
{{- $name := include "hookstream.operator.fullname" . -}}
{{- $watch := include "hookstream.watchNamespaces" . | fromYamlArray -}}
{{- if has .Release.Namespace $watch -}}
{{- printf "%s-config" $name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name -}}
{{- end -}}
{{- end -}}

{{/*
What the operator may do with hookstream objects and Secrets in the namespaces it watches: read
and watch the objects, write their status, read a Secret by name (never list or watch: it
fetches only the Secrets objects reference) and record Events.
*/}}
{{- define "hookstream.operator.objectRules" -}}
- apiGroups: ["hookstream.io"]
  resources: ["sources", "destinations", "connections", "topics", "alertrules"]
  verbs: ["get", "list", "watch"]
# Finalizers are added and removed with a patch of the object's metadata.
- apiGroups: ["hookstream.io"]
  resources: ["sources", "destinations", "connections", "topics", "alertrules"]
  verbs: ["patch"]
- apiGroups: ["hookstream.io"]
  resources:
    - sources/status
    - destinations/status
    - connections/status
    - topics/status
    - alertrules/status
  verbs: ["get", "patch", "update"]
# secretRefs resolve in the referencing object's namespace. get only: Secrets are fetched by
# the names objects reference, so the operator cannot list a namespace's Secrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
