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

{{/* "true" when leader election is on: several replicas, or leaderElection.enabled. */}}
{{- define "tokensync.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The Lease's name (`--leader-election-id`): the full name, so two releases in one namespace never share a Lease. */}}
{{- define "tokensync.hashKeySecret" -}}
{{- include "tokensync.fullname" . }}-hash-key
{{- end }}

{{/*
The operator's own Secret: the credentials-hash key, read by name and created once. RBAC cannot
limit create to a name, so that verb covers Secrets of the release namespace only.
*/}}
{{- define "tokensync.hashKeyRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: [{{ include "tokensync.hashKeySecret" . | quote }}]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
{{- end }}

{{- define "tokensync.leaseName" -}}
{{- include "tokensync.fullname" . }}
{{- end }}

{{/*
The election timings must nest as in client-go: a leader gives up when it could not renew within
renewDeadline, which must come before its Lease expires (leaseDuration) for a standby to take over
safely; and a candidate retries several times within renewDeadline. JSON schema cannot compare two
values, so values.schema.json checks each alone and this checks them against each other.
*/}}
{{- define "tokensync.validateLeaderElection" -}}
{{- $le := .Values.leaderElection }}
{{- if ge (int $le.renewDeadline) (int $le.leaseDuration) }}
{{- fail (printf "leaderElection.renewDeadline (%v) must be less than leaderElection.leaseDuration (%v): a leader must give up before its Lease expires" $le.renewDeadline $le.leaseDuration) }}
{{- end }}
{{- if ge (int $le.retryPeriod) (int $le.renewDeadline) }}
{{- fail (printf "leaderElection.retryPeriod (%v) must be less than leaderElection.renewDeadline (%v): a leader must get to retry its renewal before it gives up" $le.retryPeriod $le.renewDeadline) }}
{{- end }}
{{- end }}

{{/*
The namespaced RBAC rules: exactly the calls the operator makes inside each namespace it watches.
Every verb is listed; nothing is a wildcard.
*/}}
{{- define "tokensync.namespacedRules" -}}
# ClientCredentials: the informer lists and watches them; patch removes the old kopf finalizer and
# annotations once, on the upgrade from the kopf-based operator.
- apiGroups: ["tokensync.io"]
  resources: ["clientcredentials"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["tokensync.io"]
  resources: ["clientcredentials/status"]
  verbs: ["patch"]
# The target Secret's ownerReference sets blockOwnerDeletion (foreground deletion waits for it):
# with the OwnerReferencesPermissionEnforcement admission plugin (OpenShift's default) that needs
# update on the owner's finalizers subresource. tokensync adds no finalizer itself.
- apiGroups: ["tokensync.io"]
  resources: ["clientcredentials/finalizers"]
  verbs: ["update"]
# Secrets: get reads credentials Secrets; list/watch feed the label-selected informer of target
# Secrets and the metadata-only informer of all Secrets; create/patch write target Secrets; delete
# removes the old target Secret when target.name changes.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# caBundleRef may name a ConfigMap.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
# Events on the ClientCredentials (core/v1 Events only).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rolloutRestart.enabled }}
# rolloutRestart: restart workloads that mount a refreshed token.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- end }}
{{- end }}

{{/*
Leader election: candidates read the Lease, the first one creates it, the leader renews it and a
standby takes it over (both updates). Only in the release namespace (`--leader-election-namespace`).
*/}}
{{- define "tokensync.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/*
The admission policy's name (and its binding's). Cluster-scoped, so it carries the release namespace:
releases sharded by namespace may share a release name.
*/}}
{{- define "tokensync.admissionPolicyName" -}}
{{- printf "%s-%s-allowed-token-hosts" (include "tokensync.fullname" .) .Release.Namespace }}
{{- end }}
