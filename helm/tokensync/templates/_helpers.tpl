{{/* The chart name, overridable. */}}
{{- define "tokensync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name prefix of every resource: <release>-<name>, or <release> when it already contains the name. */}}
{{- define "tokensync.fullname" -}}
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

{{/* helm.sh/chart label value. */}}
{{- define "tokensync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "tokensync.labels" -}}
helm.sh/chart: {{ include "tokensync.chart" . }}
{{ include "tokensync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokensync
{{- end }}

{{/* Selector labels: stable across upgrades. */}}
{{- define "tokensync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokensync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "tokensync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokensync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "tokensync.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when kopf peering is on: several replicas, or ha.enabled. */}}
{{- define "tokensync.peering" -}}
{{- if or .Values.ha.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The peering object's name: the release name (`--peering`). */}}
{{- define "tokensync.peeringName" -}}
{{- .Release.Name }}
{{- end }}

{{/*
The namespaced RBAC rules: what the operator does inside each namespace it watches.
Every verb is listed; nothing is a wildcard.
*/}}
{{- define "tokensync.namespacedRules" -}}
# The ClientCredentials: kopf lists and watches them and patches its annotations and finalizer.
- apiGroups: ["tokensync.io"]
  resources: ["clientcredentials"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["tokensync.io"]
  resources: ["clientcredentials/status"]
  verbs: ["get", "patch", "update"]
# The target Secret's ownerReference has blockOwnerDeletion: that needs update on the owner's finalizers.
- apiGroups: ["tokensync.io"]
  resources: ["clientcredentials/finalizers"]
  verbs: ["update"]
# Credentials Secrets are read and watched; target Secrets are created and patched (never deleted:
# the garbage collector removes them through their ownerReference).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# caBundleRef may name a ConfigMap.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rolloutRestart.enabled }}
# rolloutRestart: restart workloads that mount a refreshed token.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- end }}
{{- end }}

{{/* kopf reads CustomResourceDefinitions to discover the resources it serves. */}}
{{- define "tokensync.crdDiscoveryRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* The peering CRD of this mode: clusterkopfpeerings (cluster-wide) or kopfpeerings (watchNamespaces). */}}
{{- define "tokensync.peeringPlural" -}}
{{- if .Values.watchNamespaces }}kopfpeerings{{ else }}clusterkopfpeerings{{ end }}
{{- end }}

{{- define "tokensync.peeringKind" -}}
{{- if .Values.watchNamespaces }}KopfPeering{{ else }}ClusterKopfPeering{{ end }}
{{- end }}

{{- define "tokensync.peeringRules" -}}
# kopf peering: each replica patches its keep-alive into the peering object and watches the others.
- apiGroups: ["kopf.dev"]
  resources: [{{ include "tokensync.peeringPlural" . | quote }}]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
