{{/* Resource name: fullnameOverride, else the release name (nameOverride is prefixed to it when set). */}}
{{- define "sdeks.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if .Values.nameOverride -}}
{{- printf "%s-%s" .Release.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sdeks.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
sdeks.io/runtime: {{ .Values.runtime.name }}
{{- end -}}

{{- define "sdeks.labels" -}}
{{ include "sdeks.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sdeks
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sdeks.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sdeks.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* PersistentVolumes are cluster-scoped: the namespace is part of the name. */}}
{{- define "sdeks.modelsVolumeName" -}}
{{- printf "%s-%s-models" .Release.Namespace (include "sdeks.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Seconds a terminating pod gets: the task's grace plus the margin to interrupt, release and exit. */}}
{{- define "sdeks.terminationGracePeriod" -}}
{{- add .Values.agent.shutdownGraceSeconds .Values.agent.terminationMarginSeconds -}}
{{- end -}}

{{- define "sdeks.modelsRegion" -}}
{{- default .Values.aws.region .Values.models.s3.region -}}
{{- end -}}

{{/* Values without a default: fail with the key's name (the schema also lists them). */}}
{{- define "sdeks.validate" -}}
{{- $_ := required "runtime.image is required: the inference server image (sd_runtime/Dockerfile)" .Values.runtime.image -}}
{{- $_ := required "agent.image is required: the queue agent image (queue_agent/Dockerfile)" .Values.agent.image -}}
{{- $_ := required "agent.queueUrl is required: the SQS queue URL of this runtime" .Values.agent.queueUrl -}}
{{- $_ := required "agent.outputBucket is required: the S3 bucket for generated images" .Values.agent.outputBucket -}}
{{- $_ := required "agent.resultsTopicArn is required: the SNS results topic ARN" .Values.agent.resultsTopicArn -}}
{{- $_ := required "agent.taskTable is required: the DynamoDB task table name" .Values.agent.taskTable -}}
{{- $_ := required "aws.region is required" .Values.aws.region -}}
{{- if eq .Values.models.source "s3" -}}
{{- $_ := required "models.s3.bucket is required when models.source=s3" .Values.models.s3.bucket -}}
{{- end -}}
{{- if .Values.nodePool.enabled -}}
{{- $_ := required "nodePool.clusterName is required when nodePool.enabled=true" .Values.nodePool.clusterName -}}
{{- $_ := required "nodePool.nodeRole is required when nodePool.enabled=true" .Values.nodePool.nodeRole -}}
{{- end -}}
{{- if and .Values.scaling.enabled (lt (int .Values.scaling.maxReplicas) (int .Values.scaling.minReplicas)) -}}
{{- fail (printf "scaling.maxReplicas (%v) must be >= scaling.minReplicas (%v)" .Values.scaling.maxReplicas .Values.scaling.minReplicas) -}}
{{- end -}}
{{- end -}}
