{{/*
Shared helpers. Each component's folder (templates/<component>/) calls the same
library templates with (dict "ctx" $ "component" "<name>"), as the Mimir and Loki
charts do: one way to build a Deployment, Service, PDB, HPA, ServiceMonitor and
NetworkPolicy, so the six components cannot drift apart.
*/}}

{{- define "atelier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "atelier.fullname" -}}
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

{{/* The six targets of `atelier serve --target`, in start order. */}}
{{- define "atelier.components" -}}
auth image processing workflow user gateway
{{- end -}}

{{/* The values key of a component: `image` is the container image, so the image
service's settings live under `imageService`. */}}
{{- define "atelier.valuesKey" -}}
{{- if eq . "image" -}}imageService{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{/* A component's values: (dict "ctx" $ "component" "auth") -> YAML of .Values.auth */}}
{{- define "atelier.componentValues" -}}
{{- toYaml (index .ctx.Values (include "atelier.valuesKey" .component)) -}}
{{- end -}}

{{/* What each component talks to, from the design: who calls whom over gRPC, and which
backends and secrets it needs. The admin /readyz of a service dials its own Service,
so each service calls itself too. */}}
{{- define "atelier.topology" -}}
calls:
  gateway: [auth, image, processing, workflow, user]
  auth: [auth]
  image: [image, auth, processing, user]
  processing: [processing, auth, image, workflow, user]
  workflow: [workflow, auth]
  user: [user, auth, image, processing, workflow]
database: [auth, image, processing, workflow, user, migrate]
redis: [auth, gateway, image, processing, user, workflow]
fal: [processing, workflow]
s3: [image]
webhooks: [processing]
{{- end -}}

{{- define "atelier.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object; (dict "ctx" $ "component" "auth") or the root context. */}}
{{- define "atelier.labels" -}}
{{- $ctx := .ctx | default . -}}
helm.sh/chart: {{ include "atelier.chart" $ctx }}
{{ include "atelier.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: atelier
{{- end -}}

{{- define "atelier.selectorLabels" -}}
{{- $ctx := .ctx | default . -}}
app.kubernetes.io/name: {{ include "atelier.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* <release>-<component>: the Deployment, Service, PDB, ... of a component. */}}
{{- define "atelier.componentName" -}}
{{- printf "%s-%s" (include "atelier.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The gRPC port of a component. */}}
{{- define "atelier.port" -}}
{{- (index .ctx.Values (include "atelier.valuesKey" .component)).port -}}
{{- end -}}

{{/* How the others reach a component: https://<release>-<component>:<port> (mutual TLS). */}}
{{- define "atelier.url" -}}
{{- printf "https://%s:%v" (include "atelier.componentName" .) (include "atelier.port" .) -}}
{{- end -}}

{{/* Where every pod finds the service certificates (SERVICE_TLS_DIR): one directory per
component, each a TLS Secret mounted read-only. */}}
{{- define "atelier.serviceTlsDir" -}}
/etc/atelier/tls
{{- end -}}

{{/* The TLS Secret of a component's certificate (or "operator"):
(dict "ctx" $ "component" "auth") -> <fullname>-auth-tls. */}}
{{- define "atelier.serviceTlsSecret" -}}
{{- printf "%s-%s-tls" (include "atelier.fullname" .ctx) .component -}}
{{- end -}}

{{/* The issuer of the services' certificates: serviceTls.issuerRef, or the chart's CA. */}}
{{- define "atelier.serviceTlsIssuerRef" -}}
{{- $ref := .Values.serviceTls.issuerRef -}}
{{- if $ref.name -}}
name: {{ $ref.name }}
kind: {{ $ref.kind }}
group: {{ $ref.group }}
{{- else -}}
name: {{ include "atelier.fullname" . }}-ca
kind: Issuer
group: cert-manager.io
{{- end -}}
{{- end -}}

{{/* A cert-manager Certificate for a component's service identity: its SPIFFE id as a
URI name, the names clients dial (its Service, short and qualified) and the pod's own
loopback (readiness calls the listener at https://127.0.0.1:<port>), server and client
use. The "operator" identity is a client certificate for administration tools. */}}
{{- define "atelier.certificate" -}}
{{- $ctx := .ctx -}}
{{- $tls := $ctx.Values.serviceTls -}}
{{- if eq $tls.source "certManager" }}
{{- $service := include "atelier.componentName" . }}
{{- $ns := $ctx.Release.Namespace }}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ $service }}
  namespace: {{ $ns }}
  labels:
    {{- include "atelier.labels" . | nindent 4 }}
spec:
  secretName: {{ include "atelier.serviceTlsSecret" . }}
  secretTemplate:
    labels:
      {{- include "atelier.selectorLabels" . | nindent 6 }}
  duration: {{ $tls.duration }}
  renewBefore: {{ $tls.renewBefore }}
  uris:
    - spiffe://atelier/{{ .component }}
  {{- if eq .component "operator" }}
  usages:
    - digital signature
    - client auth
  {{- else }}
  dnsNames:
    - {{ $service }}
    - {{ $service }}.{{ $ns }}
    - {{ $service }}.{{ $ns }}.svc
    - {{ $service }}.{{ $ns }}.svc.{{ $tls.clusterDomain }}
    - localhost
  ipAddresses:
    - 127.0.0.1
    - "::1"
  usages:
    - digital signature
    - key encipherment
    - server auth
    - client auth
  {{- end }}
  privateKey:
    algorithm: ECDSA
    size: 256
    encoding: PKCS8
    rotationPolicy: Always
  issuerRef:
    {{- include "atelier.serviceTlsIssuerRef" $ctx | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "atelier.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "atelier.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "atelier.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end -}}
{{- end -}}

{{/* Replicas that run at the least: HPA minimum or the fixed count. */}}
{{- define "atelier.minReplicas" -}}
{{- $v := index .ctx.Values (include "atelier.valuesKey" .component) -}}
{{- if $v.autoscaling.enabled -}}{{ $v.autoscaling.minReplicas }}{{- else -}}{{ $v.replicas }}{{- end -}}
{{- end -}}

{{/* Replicas that may run at the most. */}}
{{- define "atelier.maxReplicas" -}}
{{- $v := index .ctx.Values (include "atelier.valuesKey" .component) -}}
{{- if $v.autoscaling.enabled -}}{{ $v.autoscaling.maxReplicas }}{{- else -}}{{ $v.replicas }}{{- end -}}
{{- end -}}

{{/* Settings that only make sense together; fails the render with the reason. */}}
{{- define "atelier.validate" -}}
{{- $v := .Values -}}
{{- if and $v.postgresql.enabled $v.secrets.database.existingSecret -}}
{{- fail "set either postgresql.enabled (trials) or secrets.database.existingSecret (a managed PostgreSQL), not both" -}}
{{- end -}}
{{- if not (or $v.postgresql.enabled $v.secrets.database.existingSecret) -}}
{{- fail "a database is required: set secrets.database.existingSecret (a Secret holding DATABASE_URL) or, for trials, postgresql.enabled=true" -}}
{{- end -}}
{{- if and $v.redis.enabled $v.secrets.redis.existingSecret -}}
{{- fail "set either redis.enabled (trials) or secrets.redis.existingSecret (a managed Redis), not both" -}}
{{- end -}}
{{- $redis := or $v.redis.enabled $v.secrets.redis.existingSecret -}}
{{- $ctx := . -}}
{{- if and (not $redis) (gt (int (include "atelier.maxReplicas" (dict "ctx" $ctx "component" "processing"))) 1) -}}
{{- fail "more than one processing pod needs Redis (secrets.redis.existingSecret or redis.enabled): the in-process queue and events are per pod" -}}
{{- end -}}
{{- if and (not $v.secrets.jwtKeys.existingSecret) (gt (int (include "atelier.maxReplicas" (dict "ctx" $ctx "component" "auth"))) 1) -}}
{{- fail "more than one auth pod needs secrets.jwtKeys.existingSecret: each pod would otherwise sign with a key of its own" -}}
{{- end -}}
{{- if and (not $v.config.s3.bucket) (gt (int (include "atelier.maxReplicas" (dict "ctx" $ctx "component" "image"))) 1) -}}
{{- fail "more than one image pod needs config.s3.bucket: objects on a pod's disk are not shared" -}}
{{- end -}}
{{- if and (not $v.config.s3.bucket) $v.secrets.s3.existingSecret -}}
{{- fail "secrets.s3.existingSecret is set but config.s3.bucket is empty" -}}
{{- end -}}
{{- if and $v.processing.autoscaling.queueDepth.enabled (not $v.processing.autoscaling.enabled) -}}
{{- fail "processing.autoscaling.queueDepth.enabled needs processing.autoscaling.enabled" -}}
{{- end -}}
{{- if and $v.scanner.enabled (gt (mul (int64 $v.config.maxFileSizeMb) 1048576) (int64 $v.scanner.maxScanBytes)) -}}
{{- fail "scanner.maxScanBytes must be at least config.maxFileSizeMb: clamd refuses a longer stream, and would not scan a larger file in full" -}}
{{- end -}}
{{- if not $v.podSecurityContext.fsGroup -}}
{{- fail "podSecurityContext.fsGroup is required: the service certificates and keys are mounted readable by that group only (mode 0440)" -}}
{{- end -}}
{{- if and (eq $v.serviceTls.source "existingSecrets") $v.serviceTls.issuerRef.name -}}
{{- fail "serviceTls.issuerRef.name is set but serviceTls.source is existingSecrets: nothing would be issued" -}}
{{- end -}}
{{- end -}}

{{/* Environment every pod of `component` gets beyond the ConfigMap: its secrets. */}}
{{- define "atelier.secretEnv" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $topology := include "atelier.topology" . | fromYaml -}}
{{- $fullname := include "atelier.fullname" $ctx -}}
{{- if has .component $topology.database }}
{{- if $v.postgresql.enabled }}
- name: ATELIER_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $fullname }}-postgresql
      key: password
- name: DATABASE_URL
  value: {{ printf "postgres://%s:$(ATELIER_POSTGRES_PASSWORD)@%s-postgresql:5432/%s" $v.postgresql.username $fullname $v.postgresql.database | quote }}
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.secrets.database.existingSecret }}
      key: {{ $v.secrets.database.key }}
{{- end }}
{{- end }}
{{- if has .component $topology.redis }}
{{- if $v.redis.enabled }}
- name: ATELIER_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $fullname }}-redis
      key: password
- name: REDIS_URL
  value: {{ printf "redis://:$(ATELIER_REDIS_PASSWORD)@%s-redis:6379" $fullname | quote }}
{{- else if $v.secrets.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.secrets.redis.existingSecret }}
      key: {{ $v.secrets.redis.key }}
{{- end }}
{{- end }}
{{- if and (has .component $topology.fal) $v.secrets.fal.existingSecret }}
- name: FAL_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.secrets.fal.existingSecret }}
      key: {{ $v.secrets.fal.key }}
{{- end }}
{{- if and (has .component $topology.s3) $v.secrets.s3.existingSecret }}
- name: S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $v.secrets.s3.existingSecret }}
      key: {{ $v.secrets.s3.accessKeyIdKey }}
- name: S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.secrets.s3.existingSecret }}
      key: {{ $v.secrets.s3.secretAccessKeyKey }}
{{- end }}
{{- if and (eq .component "image") $v.secrets.urlSigningKey.existingSecret }}
- name: URL_SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.secrets.urlSigningKey.existingSecret }}
      key: {{ $v.secrets.urlSigningKey.key }}
{{- end }}
{{- if and (eq .component "auth") $v.secrets.jwtKeys.existingSecret }}
- name: JWT_KEYS_DIR
  value: /etc/atelier/jwt
{{- end }}
{{- if eq .component "gateway" }}
{{- if $v.gateway.tls.secretName }}
- name: GATEWAY_TLS_CERT_FILE
  value: /etc/atelier/edge-tls/tls.crt
- name: GATEWAY_TLS_KEY_FILE
  value: /etc/atelier/edge-tls/tls.key
- name: GATEWAY_TLS_RELOAD_SECS
  value: {{ $v.gateway.tls.reloadSecs | quote }}
{{- else }}
# Plain HTTP on every interface of the pod: the ingress in front terminates TLS.
- name: GATEWAY_PLAINTEXT
  value: "true"
{{- end }}
{{- end }}
{{- if and (eq .component "image") $v.secrets.storageEncryptionKey.existingSecret }}
- name: STORAGE_ENCRYPTION_KEY_FILE
  value: {{ printf "/etc/atelier/storage-key/%s" $v.secrets.storageEncryptionKey.key | quote }}
{{- end }}
{{- end -}}

{{- define "atelier.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "atelier.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* Probes, all HTTP: the gRPC port speaks TLS only, which the kubelet's native gRPC
probe cannot. Services: /healthz on the admin port (alive) and /readyz there (it asks
grpc.health.v1 for the service's own name over TLS at 127.0.0.1, which turns NOT_SERVING
on shutdown). The gateway: /healthz and /readyz on the admin port too (the services it
fronts answer); its public port serves neither /readyz nor /metrics. A start-up probe
covers migrations and a database that is late. */}}
{{- define "atelier.probes" -}}
{{- $ctx := .ctx -}}
{{- if eq .component "gateway" }}
startupProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 5
  failureThreshold: 30
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- else }}
startupProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 5
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}
{{- end -}}

{{/* Soft spreading over zones and nodes, unless the component sets its own. */}}
{{- define "atelier.topologySpreadConstraints" -}}
{{- $v := index .ctx.Values (include "atelier.valuesKey" .component) -}}
{{- if $v.topologySpreadConstraints -}}
{{ toYaml $v.topologySpreadConstraints }}
{{- else if .ctx.Values.topologySpread.enabled -}}
- maxSkew: {{ .ctx.Values.topologySpread.zoneSkew }}
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "atelier.selectorLabels" . | nindent 6 }}
  matchLabelKeys: [pod-template-hash]
- maxSkew: {{ .ctx.Values.topologySpread.hostSkew }}
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "atelier.selectorLabels" . | nindent 6 }}
  matchLabelKeys: [pod-template-hash]
{{- end -}}
{{- end -}}

{{/* One component's Deployment: `atelier serve --target=<component>`. */}}
{{- define "atelier.deployment" -}}
{{- $ctx := .ctx -}}
{{- $v := index $ctx.Values (include "atelier.valuesKey" .component) -}}
{{- $component := .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "atelier.componentName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "atelier.labels" . | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "atelier.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "atelier.selectorLabels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $ctx.Template.BasePath "/configmap.yaml") $ctx | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "atelier.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "atelier.podSecurityContext" $ctx | nindent 8 }}
      terminationGracePeriodSeconds: {{ if eq $component "processing" }}60{{ else }}30{{ end }}
      containers:
        - name: {{ $component }}
          image: {{ include "atelier.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          args:
            - serve
            - --target={{ $component }}
          ports:
            {{- if eq $component "gateway" }}
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
            {{- else }}
            - name: grpc
              containerPort: {{ $v.port }}
              protocol: TCP
            {{- end }}
            - name: admin
              containerPort: {{ $ctx.Values.adminPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "atelier.fullname" $ctx }}
          {{- $env := include "atelier.secretEnv" . | trim }}
          {{- $scan := and (eq $component "image") $ctx.Values.scanner.enabled }}
          {{- if or $env $v.extraEnv $scan }}
          env:
            {{- with $env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- if $scan }}
            {{- include "atelier.scannerEnv" $ctx | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          {{- include "atelier.probes" . | trim | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "atelier.containerSecurityContext" $ctx | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: data
              mountPath: /var/lib/atelier
            - name: service-tls
              mountPath: {{ include "atelier.serviceTlsDir" $ctx }}/{{ $component }}
              readOnly: true
            {{- if and (eq $component "auth") $ctx.Values.secrets.jwtKeys.existingSecret }}
            - name: jwt-keys
              mountPath: /etc/atelier/jwt
              readOnly: true
            {{- end }}
            {{- if and (eq $component "gateway") $ctx.Values.gateway.tls.secretName }}
            - name: edge-tls
              mountPath: /etc/atelier/edge-tls
              readOnly: true
            {{- end }}
            {{- if and (eq $component "image") $ctx.Values.secrets.storageEncryptionKey.existingSecret }}
            - name: storage-key
              mountPath: /etc/atelier/storage-key
              readOnly: true
            {{- end }}
        {{- if and (eq $component "image") $ctx.Values.scanner.enabled }}
        {{- include "atelier.clamdContainer" $ctx | nindent 8 }}
        {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            {{- if eq $component "image" }}
            sizeLimit: {{ $v.tmpSizeLimit }}
            {{- else }}
            sizeLimit: 64Mi
            {{- end }}
        {{- if and (eq $component "image") $v.persistence.enabled (not $ctx.Values.config.s3.bucket) }}
        - name: data
          persistentVolumeClaim:
            claimName: {{ include "atelier.componentName" . }}-data
        {{- else }}
        - name: data
          {{- if eq $component "image" }}
          # Objects live here when there is no S3 bucket (trials): no size limit.
          emptyDir: {}
          {{- else }}
          emptyDir:
            sizeLimit: 64Mi
          {{- end }}
        {{- end }}
        # This component's certificate (renewals show up in place: no subPath).
        - name: service-tls
          secret:
            secretName: {{ include "atelier.serviceTlsSecret" . }}
            defaultMode: 0440
        {{- if and (eq $component "image") $ctx.Values.scanner.enabled }}
        {{- include "atelier.clamdVolumes" $ctx | nindent 8 }}
        {{- end }}
        {{- if and (eq $component "auth") $ctx.Values.secrets.jwtKeys.existingSecret }}
        - name: jwt-keys
          secret:
            secretName: {{ $ctx.Values.secrets.jwtKeys.existingSecret }}
            defaultMode: 0440
        {{- end }}
        {{- if and (eq $component "gateway") $ctx.Values.gateway.tls.secretName }}
        # The gateway's public certificate (renewals show up in place: no subPath).
        - name: edge-tls
          secret:
            secretName: {{ $ctx.Values.gateway.tls.secretName }}
            defaultMode: 0440
        {{- end }}
        {{- if and (eq $component "image") $ctx.Values.secrets.storageEncryptionKey.existingSecret }}
        - name: storage-key
          secret:
            secretName: {{ $ctx.Values.secrets.storageEncryptionKey.existingSecret }}
            defaultMode: 0440
            items:
              - key: {{ $ctx.Values.secrets.storageEncryptionKey.key }}
                path: {{ $ctx.Values.secrets.storageEncryptionKey.key }}
        {{- end }}
      {{- $spread := include "atelier.topologySpreadConstraints" . | trim }}
      {{- with $spread }}
      topologySpreadConstraints:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* One component's Service: its gRPC port (HTTP for the gateway) and the admin port. */}}
{{- define "atelier.service" -}}
{{- $ctx := .ctx -}}
{{- $v := index $ctx.Values (include "atelier.valuesKey" .component) -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "atelier.componentName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "atelier.labels" . | nindent 4 }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type | default "ClusterIP" }}
  selector:
    {{- include "atelier.selectorLabels" . | nindent 4 }}
  ports:
    {{- if eq .component "gateway" }}
    - name: http
      port: {{ $v.port }}
      targetPort: http
      protocol: TCP
    {{- else }}
    - name: grpc
      port: {{ $v.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- end }}
    - name: admin
      port: {{ $ctx.Values.adminPort }}
      targetPort: admin
      protocol: TCP
{{- end -}}

{{/* A PodDisruptionBudget, rendered when more than one pod runs at the least. */}}
{{- define "atelier.podDisruptionBudget" -}}
{{- $ctx := .ctx -}}
{{- $v := index $ctx.Values (include "atelier.valuesKey" .component) -}}
{{- if gt (int (include "atelier.minReplicas" .)) 1 }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "atelier.componentName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "atelier.labels" . | nindent 4 }}
spec:
  {{- $pdb := $v.podDisruptionBudget | default dict }}
  {{- if hasKey $pdb "minAvailable" }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else if hasKey $pdb "maxUnavailable" }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- else }}
  maxUnavailable: 1
  {{- end }}
  selector:
    matchLabels:
      {{- include "atelier.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* A HorizontalPodAutoscaler on CPU; for processing also on the queue's depth. */}}
{{- define "atelier.horizontalPodAutoscaler" -}}
{{- $ctx := .ctx -}}
{{- $v := index $ctx.Values (include "atelier.valuesKey" .component) -}}
{{- if $v.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "atelier.componentName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "atelier.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "atelier.componentName" . }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
    {{- with $v.autoscaling.queueDepth }}
    {{- if .enabled }}
    - type: External
      external:
        metric:
          name: {{ .metricName }}
          {{- with .selector }}
          selector:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        target:
          type: AverageValue
          averageValue: {{ .targetAverageValue | quote }}
    {{- end }}
    {{- end }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
{{- end }}
{{- end -}}

{{/* A ServiceMonitor scraping the admin port's /metrics. */}}
{{- define "atelier.serviceMonitor" -}}
{{- $ctx := .ctx -}}
{{- if $ctx.Values.serviceMonitor.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "atelier.componentName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "atelier.labels" . | nindent 4 }}
    {{- with $ctx.Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "atelier.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames: [{{ $ctx.Release.Namespace }}]
  endpoints:
    - port: admin
      path: /metrics
      interval: {{ $ctx.Values.serviceMonitor.interval }}
      scrapeTimeout: {{ $ctx.Values.serviceMonitor.scrapeTimeout }}
{{- end }}
{{- end -}}

{{/* Egress rules to the backends `component` needs (see atelier.topology). */}}
{{- define "atelier.backendEgress" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $np := $v.networkPolicy -}}
{{- $topology := include "atelier.topology" . | fromYaml -}}
- to:
    {{- toYaml $np.dns.to | nindent 4 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- if has .component $topology.database }}
{{- if $v.postgresql.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "atelier.selectorLabels" (dict "ctx" $ctx "component" "postgresql") | nindent 10 }}
  ports:
    - {port: 5432, protocol: TCP}
{{- else }}
- to:
    {{- range $np.postgresql.cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    {{- range $np.postgresql.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}
{{- end }}
{{- if has .component $topology.redis }}
{{- if $v.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "atelier.selectorLabels" (dict "ctx" $ctx "component" "redis") | nindent 10 }}
  ports:
    - {port: 6379, protocol: TCP}
{{- else if $v.secrets.redis.existingSecret }}
- to:
    {{- range $np.redis.cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    {{- range $np.redis.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}
{{- end }}
{{- if and (has .component $topology.s3) $v.config.s3.bucket }}
- to:
    {{- range $np.s3.cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    {{- range $np.s3.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}
{{- if has .component $topology.fal }}
- to:
    {{- range $np.fal.cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    {{- range $np.fal.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}
{{- if has .component $topology.webhooks }}
- to:
    {{- range $np.webhooks.cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    {{- range $np.webhooks.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}
{{- end -}}

{{/* A component's NetworkPolicy: ingress from its callers (the ingress controller for
the gateway) and from Prometheus on the admin port; egress to the services it calls,
DNS and its backends. Everything else is denied by the default-deny policy. */}}
{{- define "atelier.networkPolicy" -}}
{{- $ctx := .ctx -}}
{{- $np := $ctx.Values.networkPolicy -}}
{{- if $np.enabled }}
{{- $component := .component -}}
{{- $topology := include "atelier.topology" . | fromYaml -}}
{{- $v := index $ctx.Values (include "atelier.valuesKey" $component) -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "atelier.componentName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "atelier.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "atelier.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    {{- if eq $component "gateway" }}
    - from:
        {{- toYaml $np.ingressFrom | nindent 8 }}
      ports:
        - {port: http, protocol: TCP}
    {{- else }}
    {{- $callers := list }}
    {{- range $caller, $callees := $topology.calls }}
    {{- if has $component $callees }}
    {{- $callers = append $callers $caller }}
    {{- end }}
    {{- end }}
    - from:
        {{- range $callers | sortAlpha }}
        - podSelector:
            matchLabels:
              {{- include "atelier.selectorLabels" (dict "ctx" $ctx "component" .) | nindent 14 }}
        {{- end }}
      ports:
        - {port: grpc, protocol: TCP}
    {{- end }}
    {{- with $np.metricsFrom }}
    - from:
        {{- toYaml . | nindent 8 }}
      ports:
        - {port: admin, protocol: TCP}
    {{- end }}
  egress:
    {{- range index $topology.calls $component }}
    - to:
        - podSelector:
            matchLabels:
              {{- include "atelier.selectorLabels" (dict "ctx" $ctx "component" .) | nindent 14 }}
      ports:
        - {port: {{ include "atelier.port" (dict "ctx" $ctx "component" .) }}, protocol: TCP}
    {{- end }}
    {{- include "atelier.backendEgress" . | nindent 4 }}
{{- end }}
{{- end -}}

{{/* The image service's scanner settings: clamd beside it in the pod. */}}
{{- define "atelier.scannerEnv" -}}
{{- $s := .Values.scanner -}}
- name: SCANNER
  value: clamd
- name: CLAMD_ADDRESS
  value: {{ printf "127.0.0.1:%v" $s.port | quote }}
- name: SCAN_UNAVAILABLE
  value: {{ $s.onUnavailable | quote }}
- name: SCAN_WAIT_SECONDS
  value: {{ $s.waitSeconds | quote }}
- name: CLAMD_TIMEOUT_SECONDS
  value: {{ $s.timeoutSeconds | quote }}
{{- end -}}

{{/* The clamd sidecar of the image pods (scanner.enabled). */}}
{{- define "atelier.clamdContainer" -}}
{{- $s := .Values.scanner -}}
- name: clamd
  image: {{ printf "%s:%s" $s.image.repository $s.image.tag | quote }}
  imagePullPolicy: {{ $s.image.pullPolicy }}
  ports:
    - name: clamd
      containerPort: {{ $s.port }}
      protocol: TCP
  # Ready once clamd answers PING: the image pod takes uploads only then.
  startupProbe:
    exec:
      command: ["clamdscan", "--ping", "1"]
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 60
  readinessProbe:
    exec:
      command: ["clamdscan", "--ping", "1"]
    periodSeconds: 15
    timeoutSeconds: 5
  livenessProbe:
    exec:
      command: ["clamdscan", "--ping", "3"]
    periodSeconds: 30
    timeoutSeconds: 10
    failureThreshold: 4
  resources:
    {{- toYaml $s.resources | nindent 4 }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    runAsUser: {{ $s.runAsUser }}
    runAsGroup: {{ $s.runAsUser }}
    capabilities:
      drop: [ALL]
  volumeMounts:
    - name: clamd-config
      mountPath: /etc/clamav/clamd.conf
      subPath: clamd.conf
      readOnly: true
    - name: clamd-database
      mountPath: /var/lib/clamav
    - name: clamd-run
      mountPath: /run/clamav
    - name: clamd-log
      mountPath: /var/log/clamav
    - name: clamd-tmp
      mountPath: /tmp
{{- end -}}

{{- define "atelier.clamdVolumes" -}}
- name: clamd-config
  configMap:
    name: {{ include "atelier.fullname" . }}-clamd
- name: clamd-database
  emptyDir:
    sizeLimit: {{ .Values.scanner.databaseSizeLimit }}
- name: clamd-run
  emptyDir:
    sizeLimit: 16Mi
- name: clamd-log
  emptyDir:
    sizeLimit: 64Mi
# clamd spools each stream here while it scans it: room for the largest one.
- name: clamd-tmp
  emptyDir:
    sizeLimit: {{ .Values.scanner.maxScanBytes | int64 | mul 2 }}
{{- end -}}
