#!/usr/bin/env bash
# discover.sh: the running instances of this cluster as host:slots lines,
# for `spotrun launch --discover`. Instances are found by a tag
# (spotrun-cluster=NAME) and reached by private IP; slots = GPUs per
# instance (or SLOTS).
#
#   CLUSTER=my-cluster SLOTS=1 ./discover.sh
set -euo pipefail
: "${CLUSTER:?set CLUSTER to the value of the spotrun-cluster tag}"
slots=${SLOTS:-1}
aws ec2 describe-instances \
    --filters "Name=tag:spotrun-cluster,Values=$CLUSTER" \
              "Name=instance-state-name,Values=running" \
    --query 'Reservations[].Instances[].PrivateIpAddress' --output text |
    tr '\t' '\n' | sed '/^$/d' | sort | sed "s/\$/:$slots/"
