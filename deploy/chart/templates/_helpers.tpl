{{- define "tidemark.labels" -}}
app.kubernetes.io/name: tidemark
app.kubernetes.io/part-of: tidemark
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "tidemark.selectorLabels" -}}
app.kubernetes.io/name: tidemark
app.kubernetes.io/component: agent
{{- end }}

{{- define "tidemark.subject" -}}
- kind: ServiceAccount
  name: tidemark
  namespace: {{ .Release.Namespace }}
{{- end }}
