{{/* ---- names and labels ------------------------------------------------------------------ */}}

{{- define "coinpilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "coinpilot.fullname" -}}
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

{{- define "coinpilot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "coinpilot.labels" -}}
helm.sh/chart: {{ include "coinpilot.chart" . }}
app.kubernetes.io/name: {{ include "coinpilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coinpilot
{{- end }}

{{/* Selector labels of one component: include "coinpilot.selectorLabels" (list $ "risk") */}}
{{- define "coinpilot.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "coinpilot.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "coinpilot.componentLabels" -}}
{{ include "coinpilot.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "coinpilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coinpilot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "coinpilot.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end }}
{{- end }}

{{/* ---- topology: which stores are bundled, which services exist --------------------------- */}}

{{/* The services that may run more than one replica (replicas split the symbol space). */}}
{{- define "coinpilot.scalingServices" -}}indicator strategy agent notifier{{- end }}

{{/* Stages whose work is per symbol: more replicas than symbols would sit idle; more than one
needs partitions.count > 1 (each replica owns partitions of the symbols; the collector records
and polls Upbit for those only). */}}
{{- define "coinpilot.partitionedServices" -}}indicator strategy collector{{- end }}

{{/* Single writers that run hot standbys with standby.enabled (one lease, one active replica). */}}
{{- define "coinpilot.standbyServices" -}}risk executor{{- end }}

{{/* Refuse replicas a partitioned stage cannot run safely. Arg: (list $ "<service>" <replicas> "<key>") */}}
{{- define "coinpilot.partitionCheck" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $n := int (index . 2) -}}
{{- $key := index . 3 -}}
{{- $parts := int $root.Values.partitions.count -}}
{{- if and (gt $n 1) (le $parts 1) -}}
{{- fail (printf "services.%s.%s (%d) needs partitions.count > 1: without partitions every replica of %s reads the same durable consumers, so one symbol's messages would be handled by several replicas at once, out of order. Set partitions.count (e.g. 8; docs/deploy.md, \"Partitioned replicas\") or keep one replica" $name $key $n $name) -}}
{{- end -}}
{{- if and (gt $parts 1) (gt $n $parts) -}}
{{- fail (printf "services.%s.%s (%d) exceeds partitions.count (%d): a replica beyond the partitions would own none" $name $key $n $parts) -}}
{{- end -}}
{{- end }}

{{- define "coinpilot.anyBundled" -}}
{{- if or .Values.nats.bundled.enabled .Values.timescaledb.bundled.enabled .Values.redis.bundled.enabled -}}
true
{{- end }}
{{- end }}

{{- define "coinpilot.secretName" -}}
{{- default (include "coinpilot.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "coinpilot.natsUrl" -}}
{{- if .Values.nats.bundled.enabled -}}
nats://{{ include "coinpilot.fullname" . }}-nats:4222
{{- else -}}
{{ required "nats.url is required when nats.bundled.enabled is false" .Values.nats.url }}
{{- end }}
{{- end }}

{{- define "coinpilot.strategyConfigMap" -}}
{{- if .Values.strategyConfig.existingConfigMap -}}
{{ .Values.strategyConfig.existingConfigMap }}
{{- else if or .Values.strategyConfig.file .Values.strategyConfig.inline -}}
{{ include "coinpilot.fullname" . }}-strategy
{{- end }}
{{- end }}

{{/* ---- pod pieces shared by Deployments and the hook Job ----------------------------------- */}}

{{- define "coinpilot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "coinpilot.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
{{- end }}

{{/* ---- NATS identities (libs/coinpilot/bus/permissions.py) ---------------------------------- */}}

{{/* The generated authorization: one user per identity, passwords from $NATS_PASSWORD_<IDENTITY>. */}}
{{- define "coinpilot.natsAuthConf" -}}
{{ .Files.Get "files/nats-auth.conf" }}
{{- end }}

{{/* The identities, space-separated, read from the generated file (never listed by hand). */}}
{{- define "coinpilot.natsIdentities" -}}
{{- range regexFindAll "user: \"[a-z]+\"" (include "coinpilot.natsAuthConf" .) -1 -}}
{{ trimPrefix "user: " . | trimAll "\"" }}{{ " " }}
{{- end -}}
{{- end }}

{{/* The Secret key of an identity's password. Arg: the identity. */}}
{{- define "coinpilot.natsPasswordKey" -}}NATS_PASSWORD_{{ upper . }}{{- end }}

{{/* "true" when every pod connects as its own identity (always with the bundled NATS). */}}
{{- define "coinpilot.natsIdentitiesEnabled" -}}
{{- if or .Values.nats.bundled.enabled .Values.nats.identities -}}true{{- end -}}
{{- end }}

{{/* Connection environment: NATS and the database. Arg: (list $ $secretName $natsIdentity) */}}
{{- define "coinpilot.connectionEnv" -}}
{{- $root := index . 0 -}}
{{- $secret := index . 1 -}}
{{- $identity := index . 2 -}}
{{- $perIdentity := include "coinpilot.natsIdentitiesEnabled" $root -}}
- name: COINPILOT_NATS_URL
  value: {{ include "coinpilot.natsUrl" $root | quote }}
- name: COINPILOT_STREAM_REPLICAS
  value: {{ $root.Values.nats.streamReplicas | quote }}
{{- if $root.Values.nats.credsSecret }}
- name: COINPILOT_NATS_CREDS_FILE
  value: /etc/coinpilot/nats-creds/{{ ternary (printf "%s.creds" $identity) "nats.creds" (eq $perIdentity "true") }}
{{- else if $perIdentity }}
- name: COINPILOT_NATS_USER
  value: {{ $identity | quote }}
- name: COINPILOT_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "coinpilot.natsPasswordKey" $identity }}
{{- else }}
{{- if $root.Values.nats.user }}
- name: COINPILOT_NATS_USER
  value: {{ $root.Values.nats.user | quote }}
{{- end }}
- name: COINPILOT_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: COINPILOT_NATS_PASSWORD
      optional: true
{{- end }}
{{- if $root.Values.nats.tls.secretName }}
- name: COINPILOT_NATS_TLS_CA
  value: /etc/coinpilot/nats-tls/ca.crt
{{- if $root.Values.nats.tls.clientCert }}
- name: COINPILOT_NATS_TLS_CERT
  value: /etc/coinpilot/nats-tls/tls.crt
- name: COINPILOT_NATS_TLS_KEY
  value: /etc/coinpilot/nats-tls/tls.key
{{- end }}
{{- end }}
- name: COINPILOT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: COINPILOT_DATABASE_URL
- name: COINPILOT_LOG_LEVEL
  value: {{ $root.Values.config.logLevel | quote }}
- name: COINPILOT_LOG_JSON
  value: {{ $root.Values.config.logJson | quote }}
{{- end }}

{{/* Which optional secrets a service gets: only the ones it uses. */}}
{{- define "coinpilot.serviceSecretKeys" -}}
{{- $llm := list "COINPILOT_ANTHROPIC_API_KEY" "COINPILOT_OPENAI_API_KEY" -}}
{{- $webhooks := list "COINPILOT_DISCORD_WEBHOOK_URL" "COINPILOT_N8N_WEBHOOK_SECRET" -}}
{{- if eq . "agent" -}}{{ join " " $llm }}
{{- else if eq . "notifier" -}}{{ join " " (concat $llm $webhooks) }}
{{- end -}}
{{- end }}

{{/* Everything a service sees: connections, Redis, settings, its secrets. Arg: (list $ "<service>") */}}
{{- define "coinpilot.serviceEnv" -}}
{{- $service := index . 1 -}}
{{- with index . 0 -}}
{{- $secret := include "coinpilot.secretName" . -}}
{{ include "coinpilot.connectionEnv" (list . $secret $service) }}
- name: COINPILOT_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: COINPILOT_REDIS_URL
- name: COINPILOT_RUN_ID
  value: {{ .Values.config.runId | quote }}
- name: COINPILOT_SYMBOLS
  value: {{ join "," .Values.config.symbols | quote }}
- name: COINPILOT_HTTP_PORT
  value: {{ .Values.config.httpPort | quote }}
{{- if has $service (splitList " " (include "coinpilot.partitionedServices" .)) }}
- name: COINPILOT_PARTITIONS
  value: {{ .Values.partitions.count | quote }}
- name: COINPILOT_PARTITION_LEASE_SECONDS
  value: {{ .Values.partitions.leaseSeconds | quote }}
- name: COINPILOT_PARTITION_HEARTBEAT_SECONDS
  value: {{ .Values.partitions.heartbeatSeconds | quote }}
# this replica among its stage's lease holders: the pod's own name
- name: COINPILOT_MEMBER_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- if and .Values.standby.enabled (has $service (splitList " " (include "coinpilot.standbyServices" .))) }}
# hot standby: the replicas compete for one lease; only its holder consumes
- name: COINPILOT_STANDBY
  value: "true"
- name: COINPILOT_PARTITION_LEASE_SECONDS
  value: {{ .Values.partitions.leaseSeconds | quote }}
- name: COINPILOT_PARTITION_HEARTBEAT_SECONDS
  value: {{ .Values.partitions.heartbeatSeconds | quote }}
- name: COINPILOT_MEMBER_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
- name: COINPILOT_LLM_PROVIDER
  value: {{ .Values.config.llm.provider | quote }}
- name: COINPILOT_LLM_MODE
  value: {{ .Values.config.llm.mode | quote }}
- name: COINPILOT_UPBIT_BASE_URL
  value: {{ .Values.config.upbitBaseUrl | quote }}
{{- if eq $service "executor" }}
{{ include "coinpilot.executorVenueEnv" . }}
{{- end }}
{{- if and .Values.config.n8nUrl (eq $service "notifier") }}
- name: COINPILOT_N8N_URL
  value: {{ .Values.config.n8nUrl | quote }}
{{- end }}
{{- if include "coinpilot.strategyConfigMap" . }}
- name: COINPILOT_STRATEGY_CONFIG
  value: /etc/coinpilot/strategy/strategy.yaml
{{- end }}
{{- range $key := splitList " " (include "coinpilot.serviceSecretKeys" $service) | compact }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- with .Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The executor's venue: paper, or Upbit (real money) with the explicit switch, the keys by
secretKeyRef from an existing Secret, and the caps. A live venue that is not fully and explicitly
configured fails the render, as does a second replica (one executor per Upbit account). */}}
{{- define "coinpilot.executorVenueEnv" -}}
{{- $svc := .Values.services.executor -}}
{{- $live := $svc.live -}}
{{- if eq $svc.venue "upbit" -}}
{{- if not $live.enabled -}}
{{- fail "services.executor.venue=upbit trades real money: set services.executor.live.enabled=true as well to mean it" -}}
{{- end -}}
{{- if not $live.keysSecret -}}
{{- fail "services.executor.venue=upbit needs services.executor.live.keysSecret: the name of an existing Secret holding the Upbit keys (the chart never takes keys as values)" -}}
{{- end -}}
{{- if gt (int $svc.replicas) 1 -}}
{{- fail (printf "services.executor.replicas (%v) with venue=upbit: one executor per Upbit account (two would trade it from two ledgers)" $svc.replicas) -}}
{{- end -}}
{{- else if $live.enabled -}}
{{- fail "services.executor.live.enabled=true but services.executor.venue is paper: set venue=upbit to trade live, or live.enabled=false" -}}
{{- end -}}
- name: COINPILOT_EXECUTOR_VENUE
  value: {{ $svc.venue | quote }}
{{- if eq $svc.venue "upbit" }}
- name: COINPILOT_LIVE_TRADING
  value: "true"
- name: COINPILOT_UPBIT_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $live.keysSecret }}
      key: {{ $live.accessKeyKey }}
- name: COINPILOT_UPBIT_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $live.keysSecret }}
      key: {{ $live.secretKeyKey }}
- name: COINPILOT_EXECUTOR_MAX_ORDER_KRW
  value: {{ $live.maxOrderKrw | int64 | quote }}
- name: COINPILOT_EXECUTOR_MAX_DAILY_KRW
  value: {{ $live.maxDailyKrw | int64 | quote }}
- name: COINPILOT_RECONCILE_INTERVAL_SECONDS
  value: {{ $live.reconcileIntervalSeconds | quote }}
{{- end }}
{{- end }}

{{/* Volumes for NATS credentials/TLS (services and the hook Job). */}}
{{- define "coinpilot.natsVolumeMounts" -}}
{{- if .Values.nats.credsSecret }}
- name: nats-creds
  mountPath: /etc/coinpilot/nats-creds
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.secretName }}
- name: nats-tls
  mountPath: /etc/coinpilot/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "coinpilot.natsVolumes" -}}
{{- if .Values.nats.credsSecret }}
- name: nats-creds
  secret:
    secretName: {{ .Values.nats.credsSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.nats.tls.secretName }}
- name: nats-tls
  secret:
    secretName: {{ .Values.nats.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
