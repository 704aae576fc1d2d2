{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "actiontrain.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's objects, truncated to 63 characters. A release name that
already contains the chart name is used as it is.
*/}}
{{- define "actiontrain.fullname" -}}
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

{{/*
Name of the Job (or PyTorchJob) and of its headless Service. Shorter than fullname: pod hostnames
append "-INDEX" (Job) or "-worker-INDEX" (PyTorchJob) and must stay within 63 characters, and a
PyTorchJob's name must start with a letter (DNS-1035).
*/}}
{{- define "actiontrain.jobName" -}}
{{- include "actiontrain.fullname" . | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the recipe ConfigMap (fullname shortened to leave room for the suffix).
*/}}
{{- define "actiontrain.recipeConfigMapName" -}}
{{- printf "%s-recipe" (include "actiontrain.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "actiontrain.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "actiontrain.labels" -}}
helm.sh/chart: {{ include "actiontrain.chart" . }}
{{ include "actiontrain.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: trainer
{{- end }}

{{/*
Selector labels: the release's objects.
*/}}
{{- define "actiontrain.selectorLabels" -}}
app.kubernetes.io/name: {{ include "actiontrain.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels that select exactly this release's training pods (Service, NetworkPolicy).
*/}}
{{- define "actiontrain.podSelectorLabels" -}}
{{ include "actiontrain.selectorLabels" . }}
app.kubernetes.io/component: trainer
{{- end }}

{{/*
Name of the service account the pods run as.
*/}}
{{- define "actiontrain.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "actiontrain.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository@digest when a digest is set, else repository:tag with the tag
defaulting to the chart's appVersion (never "latest").
*/}}
{{- define "actiontrain.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Training processes per node: nprocPerNode, else one per GPU, else 1 (one gloo process; torchrun's
"cpu" would count the node's cores, not the pod's share).
*/}}
{{- define "actiontrain.nprocPerNode" -}}
{{- if .Values.nprocPerNode }}
{{- .Values.nprocPerNode | int }}
{{- else if gt (.Values.gpusPerNode | int) 0 }}
{{- .Values.gpusPerNode | int }}
{{- else }}
{{- 1 }}
{{- end }}
{{- end }}

{{/*
The container's resources: `resources` as given, else perProcess times the processes per node, so
that an 8-GPU node is not left with one process's CPUs and memory; the GPUs added either way.
*/}}
{{- define "actiontrain.resources" -}}
{{- $gpus := .Values.gpusPerNode | int }}
{{- $resources := deepCopy (.Values.resources | default dict) }}
{{- if not $resources }}
{{- $nproc := include "actiontrain.nprocPerNode" . | int }}
{{- $memory := printf "%dGi" (mul $nproc (.Values.perProcess.memoryGiB | int)) }}
{{- $cpu := mul $nproc (.Values.perProcess.cpu | int) | toString }}
{{- $resources = dict "requests" (dict "cpu" $cpu "memory" $memory) "limits" (dict "memory" $memory) }}
{{- end }}
{{- if gt $gpus 0 }}
{{- $gpu := dict .Values.gpuResourceName $gpus }}
{{- $_ := set $resources "requests" (merge (deepCopy $gpu) ($resources.requests | default dict)) }}
{{- $_ := set $resources "limits" (merge (deepCopy $gpu) ($resources.limits | default dict)) }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/*
/dev/shm's size: shm.sizeLimit, else perProcess.shmGiB per training process.
*/}}
{{- define "actiontrain.shmSize" -}}
{{- if .Values.shm.sizeLimit }}
{{- .Values.shm.sizeLimit }}
{{- else }}
{{- printf "%dGi" (mul (include "actiontrain.nprocPerNode" . | int) (.Values.perProcess.shmGiB | int)) }}
{{- end }}
{{- end }}

{{/*
The recipe file's text: a shipped recipe (a copy of actiontrain/recipes/NAME.yaml, kept equal by
the chart tests) or the mapping given in values.
*/}}
{{- define "actiontrain.recipe" -}}
{{- if kindIs "string" .Values.recipe }}
{{- $file := printf "files/recipes/%s.yaml" .Values.recipe }}
{{- $text := .Files.Get $file }}
{{- if not $text }}
{{- fail (printf "recipe %q is not a shipped recipe; use one of: %s, or give the recipe itself as a mapping (recipe: {train: {epochs: 5}})" .Values.recipe (include "actiontrain.shippedRecipes" .)) }}
{{- end }}
{{- $text }}
{{- else }}
{{- toYaml .Values.recipe }}
{{- end }}
{{- end }}

{{- define "actiontrain.shippedRecipes" -}}
{{- $names := list }}
{{- range $path, $_ := .Files.Glob "files/recipes/*.yaml" }}
{{- $names = append $names (base $path | trimSuffix ".yaml") }}
{{- end }}
{{- join ", " $names }}
{{- end }}

{{/*
Checks that a JSON schema cannot express; each message names the value, what was given and a valid
example.
*/}}
{{- define "actiontrain.validate" -}}
{{- $min := .Values.nodes.min | int }}
{{- $max := .Values.nodes.max | int }}
{{- if gt $min $max }}
{{- fail (printf "nodes.min must be <= nodes.max, got min %d and max %d; e.g. --set nodes.min=2 --set nodes.max=4 (torchrun --nnodes 2:4)" $min $max) }}
{{- end }}
{{- if not .Values.data }}
{{- fail "data is required: the dataset root URL, e.g. --set data=s3://my-bucket/datasets/ucf101" }}
{{- end }}
{{- if not .Values.output }}
{{- fail "output is required: where checkpoints, metrics and the exported model go, e.g. --set output=s3://my-bucket/runs/ucf101-x3d" }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if and (regexMatch "^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)$" .name) (hasKey . "value") }}
{{- fail (printf "extraEnv %s has a plain value: credentials never go into values; put them in a Secret and set s3.existingSecret=NAME (or use a service account with IRSA)" .name) }}
{{- end }}
{{- end }}
{{- if eq .Values.image.tag "latest" }}
{{- fail "image.tag must not be latest (a run must be reproducible); leave it empty for the chart's appVersion or pin a version, e.g. --set image.tag=0.1.0" }}
{{- end }}
{{- $gpus := .Values.gpusPerNode | int }}
{{- if and (gt $gpus 0) .Values.nprocPerNode (gt (.Values.nprocPerNode | int) $gpus) }}
{{- fail (printf "nprocPerNode must be <= gpusPerNode (each process drives its own GPU), got nprocPerNode %d and gpusPerNode %d; e.g. --set nprocPerNode=%d" (.Values.nprocPerNode | int) $gpus $gpus) }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.job.maxFailedIndexes)) (gt (.Values.job.maxFailedIndexes | int) $max) }}
{{- fail (printf "job.maxFailedIndexes must be <= nodes.max (%d), got %d; null means nodes.max - nodes.min" $max (.Values.job.maxFailedIndexes | int)) }}
{{- end }}
{{- if .Values.kueue.elastic }}
{{- if ne .Values.backend "job" }}
{{- fail (printf "kueue.elastic needs backend job (Kueue resizes only a batch/v1 Job in place), got backend %s; e.g. --set backend=job" .Values.backend) }}
{{- end }}
{{- if not .Values.kueue.queueName }}
{{- fail "kueue.elastic needs kueue.queueName (the Job must be queued in Kueue to be resized); e.g. --set kueue.queueName=team-a" }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.job.maxFailedIndexes)) (gt (.Values.job.maxFailedIndexes | int) $min) }}
{{- fail (printf "job.maxFailedIndexes must be <= nodes.min (%d) with kueue.elastic (a Job resized down to nodes.min needs maxFailedIndexes <= completions), got %d; null picks it" $min (.Values.job.maxFailedIndexes | int)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The launcher every node runs, the same in charts/actiontrain and k8s/. Node 0 hosts torchrun's
c10d store (is_host=true, decided by the node index rather than by torchrun's hostname guess, which
fails while node 0's DNS name is not yet published) and so must not wait for itself. Every other
node first waits, bounded, until node 0 accepts connections. join_timeout uses the same bound: how
long the first nodes.min nodes may take to come up together. `actiontrain launch` runs torchrun's
agent with a fresh store per restart round and exits 143 after a SIGTERM (the checkpoint is
committed), which the Job's podFailurePolicy ignores. Its arguments follow as "$@" (the
container's args).

Losing node 0 takes the store with it: every other node's torchrun ends with an error. Rather
than failing those pods too (each failure counting against backoffLimitPerIndex, and the new pods
queueing again), a node other than 0 starts its launcher again in the same container, up to
ACTIONTRAIN_REJOIN_ATTEMPTS times: it waits for node 0's replacement as at the start and joins the
new rendezvous, resuming from the newest checkpoint. Node 0 itself does not retry: its pod is
replaced, with the same hostname. A usage error (2) or a stop by signal is never retried. The shell
is no longer exec'd away, so it forwards SIGTERM to the launch and returns its exit code.
*/}}
{{- define "actiontrain.launcher" -}}
set -u
is_host=false
if [ "$ACTIONTRAIN_NODE_INDEX" = 0 ]; then
  is_host=true
fi
attempt=0
stopping=false
child=
trap 'stopping=true; if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi' TERM INT
while :; do
  if [ "$is_host" = false ]; then
    python -m actiontrain.launch.rendezvous --wait "$ACTIONTRAIN_RDZV_ENDPOINT" --timeout "$ACTIONTRAIN_RDZV_TIMEOUT_S" || exit $?
  fi
  if [ "$stopping" = true ]; then
    exit 143
  fi
  python -m actiontrain launch --rdzv-conf="is_host=$is_host,join_timeout=$ACTIONTRAIN_RDZV_TIMEOUT_S" "$@" &
  child=$!
  code=0
  wait "$child" || code=$?
  # A trapped signal interrupts wait: wait again until the launch has exited, for its own code.
  while kill -0 "$child" 2>/dev/null; do
    code=0
    wait "$child" || code=$?
  done
  child=
  if [ "$code" = 0 ] || [ "$code" = 2 ] || [ "$code" = 130 ] || [ "$code" = 143 ] || [ "$stopping" = true ] || [ "$is_host" = true ] || [ "$attempt" -ge "$ACTIONTRAIN_REJOIN_ATTEMPTS" ]; then
    exit "$code"
  fi
  attempt=$((attempt + 1))
  echo "launcher: actiontrain launch ended with $code (node 0 lost?); rejoining, attempt $attempt of $ACTIONTRAIN_REJOIN_ATTEMPTS" >&2
done
{{- end }}

{{/*
Escapes "$" for Kubernetes' $(VAR) expansion in command, args and env values, so a user's value is
passed as it was written.
*/}}
{{- define "actiontrain.literal" -}}
{{- . | toString | replace "$" "$$" }}
{{- end }}

{{/*
actiontrain launch's arguments: torchrun's options, then the training command (the container's
args). Every value comes
from the container's environment through Kubernetes' $(VAR) expansion, so k8s/ runs the very same
args and a test can run a replica's command by setting the environment alone.
*/}}
{{- define "actiontrain.torchrunArgs" -}}
- --nnodes=$(ACTIONTRAIN_NNODES)
- --nproc-per-node=$(ACTIONTRAIN_NPROC_PER_NODE)
- --max-restarts=$(ACTIONTRAIN_MAX_RESTARTS)
- --rdzv-backend=c10d
- --rdzv-endpoint=$(ACTIONTRAIN_RDZV_ENDPOINT)
- --rdzv-id=$(ACTIONTRAIN_RDZV_ID)
- train
- --config=$(ACTIONTRAIN_RECIPE)
- --data=$(ACTIONTRAIN_DATA)
- --output=$(ACTIONTRAIN_OUTPUT)
{{- with .Values.format }}
- --format={{ . }}
{{- end }}
{{- if ne (.Values.split | int) 1 }}
- --split={{ .Values.split | int }}
{{- end }}
- train.device=$(ACTIONTRAIN_DEVICE)
{{- range .Values.overrides }}
- {{ include "actiontrain.literal" . | quote }}
{{- end }}
{{- end }}

{{/*
The training pod's template, shared by both backends. Call with (dict "root" $ "backend" "job")
or "pytorchjob".
*/}}
{{- define "actiontrain.podTemplate" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $jobName := include "actiontrain.jobName" $root }}
{{- $gpus := $values.gpusPerNode | int -}}
metadata:
  labels:
    {{- include "actiontrain.labels" $root | nindent 4 }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "actiontrain.recipe" $root | sha256sum }}
    {{- with $values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- if eq .backend "job" }}
  # podFailurePolicy needs Never; a failed pod is replaced by a new pod with the same index and
  # hostname, which then rejoins the rendezvous.
  restartPolicy: Never
  # <job>-<index>.<service>: the stable DNS name of each node; node 0's is the rendezvous endpoint.
  subdomain: {{ $jobName }}
  {{- end }}
  serviceAccountName: {{ include "actiontrain.serviceAccountName" $root }}
  # The trainer never calls the Kubernetes API. IRSA mounts its own projected token.
  automountServiceAccountToken: false
  # Keeps every Service of the namespace out of the environment (and out of torchrun's).
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds | int }}
  {{- with $values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $values.podSecurityContext | nindent 4 }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "trainer" "pytorch" (eq .backend "job") }}
      image: {{ include "actiontrain.image" $root }}
      imagePullPolicy: {{ $values.image.pullPolicy }}
      command:
        - /bin/sh
        - -c
        - |
          {{- include "actiontrain.launcher" $root | nindent 10 }}
        - launcher
      args:
        {{- include "actiontrain.torchrunArgs" $root | nindent 8 }}
      env:
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        {{- if eq .backend "job" }}
        # The Job controller sets the index annotation on every pod, and the controller-uid label
        # (the Job's UID) that makes each run's rendezvous id unique.
        - name: ACTIONTRAIN_NODE_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
        - name: ACTIONTRAIN_RDZV_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['batch.kubernetes.io/controller-uid']
        - name: ACTIONTRAIN_RDZV_ENDPOINT
          value: {{ printf "%s-0.%s.$(POD_NAMESPACE).svc:%d" $jobName $jobName ($values.rendezvous.port | int) | quote }}
        {{- else }}
        # The training operator labels each worker with its index and the job's name, and gives
        # worker 0 a Service named <job>-worker-0.
        - name: ACTIONTRAIN_NODE_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['training.kubeflow.org/replica-index']
        - name: ACTIONTRAIN_RDZV_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['training.kubeflow.org/job-name']
        - name: ACTIONTRAIN_RDZV_ENDPOINT
          value: {{ printf "%s-worker-0.$(POD_NAMESPACE).svc:%d" $jobName ($values.rendezvous.port | int) | quote }}
        {{- end }}
        - name: ACTIONTRAIN_RDZV_TIMEOUT_S
          value: {{ $values.rendezvous.timeoutSeconds | int | quote }}
        - name: ACTIONTRAIN_REJOIN_ATTEMPTS
          value: {{ $values.rendezvous.rejoinAttempts | int | quote }}
        - name: ACTIONTRAIN_NNODES
          value: {{ printf "%d:%d" ($values.nodes.min | int) ($values.nodes.max | int) | quote }}
        - name: ACTIONTRAIN_NPROC_PER_NODE
          value: {{ include "actiontrain.nprocPerNode" $root | quote }}
        - name: ACTIONTRAIN_MAX_RESTARTS
          value: {{ $values.maxRestarts | int | quote }}
        - name: ACTIONTRAIN_RECIPE
          value: {{ include "actiontrain.literal" $values.recipePath | quote }}
        - name: ACTIONTRAIN_DATA
          value: {{ include "actiontrain.literal" $values.data | quote }}
        - name: ACTIONTRAIN_OUTPUT
          value: {{ include "actiontrain.literal" $values.output | quote }}
        - name: ACTIONTRAIN_CACHE_DIR
          value: {{ $values.cache.path | quote }}
        # cuda on GPU nodes: a pod whose driver cannot run this CUDA build fails at once instead
        # of training on the CPU; auto elsewhere.
        - name: ACTIONTRAIN_DEVICE
          value: {{ ternary "cuda" "auto" (gt $gpus 0) | quote }}
        # A fresh rendezvous store for every restart round: with torchrun's shared store, restarted
        # workers may read a dead peer's address and fail (pytorch/pytorch#135712).
        - name: TORCH_DISABLE_SHARE_RDZV_TCP_STORE
          value: "1"
        {{- with $values.s3.endpointUrl }}
        # The S3-only variable: STS (IRSA's web identity exchange) keeps its AWS endpoint.
        - name: AWS_ENDPOINT_URL_S3
          value: {{ include "actiontrain.literal" . | quote }}
        {{- end }}
        {{- with $values.s3.region }}
        - name: AWS_REGION
          value: {{ . | quote }}
        {{- end }}
        {{- with $values.s3.existingSecret }}
        - name: AWS_ACCESS_KEY_ID
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $values.s3.accessKeyIdKey }}
        - name: AWS_SECRET_ACCESS_KEY
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $values.s3.secretAccessKeyKey }}
        {{- if $values.s3.sessionTokenKey }}
        - name: AWS_SESSION_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $values.s3.sessionTokenKey }}
        {{- end }}
        {{- end }}
        {{- with $values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: {{ ternary "rendezvous" "pytorchjob-port" (eq .backend "job") }}
          containerPort: {{ $values.rendezvous.port | int }}
          protocol: TCP
      resources:
        {{- include "actiontrain.resources" $root | nindent 8 }}
      securityContext:
        {{- toYaml $values.securityContext | nindent 8 }}
      volumeMounts:
        - name: recipe
          mountPath: {{ dir $values.recipePath }}
          readOnly: true
        - name: shm
          mountPath: /dev/shm
        - name: tmp
          mountPath: /tmp
        - name: cache
          mountPath: {{ $values.cache.path }}
  volumes:
    - name: recipe
      configMap:
        name: {{ include "actiontrain.recipeConfigMapName" $root }}
        items:
          - key: recipe.yaml
            path: {{ base $values.recipePath }}
    # DataLoader workers hand batches to the trainer through shared memory, and NCCL uses it
    # between the GPUs of a node; the container runtime's default /dev/shm is 64 MiB. It is
    # memory: its use counts against the container's memory limit.
    - name: shm
      emptyDir:
        medium: Memory
        sizeLimit: {{ include "actiontrain.shmSize" $root }}
    # The root filesystem is read-only: torchrun's error files, matplotlib's and Python's
    # temporary files go here.
    - name: tmp
      emptyDir:
        sizeLimit: {{ $values.tmp.sizeLimit }}
    # ACTIONTRAIN_CACHE_DIR: dataset annotation mirrors; refetched if the pod is replaced.
    - name: cache
      emptyDir:
        sizeLimit: {{ $values.cache.sizeLimit }}
{{- end }}
