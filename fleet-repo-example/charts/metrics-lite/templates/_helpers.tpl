{{/* Name of the chart. */}}
{{- define "metrics-lite.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of every object of the release: the release name. */}}
{{- define "metrics-lite.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the pods: stable across upgrades. */}}
{{- define "metrics-lite.selectorLabels" -}}
app.kubernetes.io/name: {{ include "metrics-lite.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "metrics-lite.labels" -}}
{{ include "metrics-lite.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Service account used by the pods. */}}
{{- define "metrics-lite.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "metrics-lite.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
