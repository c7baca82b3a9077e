{{/*
The operator's shards, as a JSON list (read back with fromJsonArray). Each shard is one set of
operator Deployments (active, and standby with peering) reconciling the policies of its own
namespaces, with its own peering object, ServiceAccount and Roles:

  name            "" for the default shard (operator.shards empty: today's single operator)
  suffix          appended to the names of the shard's objects ("" or "-<name>")
  namespaces      what it watches; empty (default shard only) means every namespace
  replicas        of its active Deployment, 0 or 1
  peering         its kopf peering name
  serviceAccount  the ServiceAccount its pods run as
  labels          extra selector labels (none for the default shard, whose selectors keep their
                  names across upgrades: a Deployment's selector cannot change)

Fails, naming the values, when shards overlap or are combined with operator.watchNamespaces.
*/}}
{{- define "meltguard.operatorShards" -}}
{{- $op := .Values.operator -}}
{{- $account := include "meltguard.serviceAccountName" (dict "ctx" . "component" "operator" "values" $op) -}}
{{- $shards := list -}}
{{- if empty $op.shards -}}
{{- $shards = list (dict "name" "" "suffix" "" "namespaces" $op.watchNamespaces "replicas" $op.replicas "peering" $op.peering.name "serviceAccount" $account "labels" dict) -}}
{{- else -}}
{{- if $op.watchNamespaces -}}
{{- fail "operator.watchNamespaces and operator.shards are both set: list each shard's namespaces under operator.shards[].namespaces instead" -}}
{{- end -}}
{{- $owners := dict -}}
{{- $names := dict -}}
{{- range $op.shards -}}
{{- $shard := . -}}
{{- if hasKey $names .name -}}
{{- fail (printf "operator.shards: two shards are named %q" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- range .namespaces -}}
{{- if hasKey $owners . -}}
{{- fail (printf "operator.shards: namespace %q is in shards %q and %q; a namespace belongs to one shard" . (get $owners .) $shard.name) -}}
{{- end -}}
{{- $_ := set $owners . $shard.name -}}
{{- end -}}
{{- $replicas := hasKey . "replicas" | ternary .replicas $op.replicas -}}
{{- $shardAccount := $op.serviceAccount.create | ternary (printf "%s-%s" $account .name) $account -}}
{{- $shards = append $shards (dict "name" .name "suffix" (printf "-%s" .name) "namespaces" .namespaces "replicas" $replicas "peering" (printf "%s-%s" $op.peering.name .name) "serviceAccount" $shardAccount "labels" (dict "meltguard.io/operator-shard" .name)) -}}
{{- end -}}
{{- end -}}
{{- toJson $shards -}}
{{- end -}}
