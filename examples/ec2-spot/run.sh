#!/usr/bin/env bash
# run.sh: train on a cluster of EC2 spot instances from the first of them.
# Restarts on a spot interruption (exit 75) or a lost instance with the
# instances running then, resuming from the S3 checkpoint with the new
# world size; SIGTERM to this script's launcher checkpoints and stops.
set -euo pipefail
cd "$(dirname "$0")"
: "${CLUSTER:?set CLUSTER (the spotrun-cluster tag)}"
: "${BUCKET:?set BUCKET (data and checkpoints)}"
export CLUSTER SLOTS=${SLOTS:-1}
exec spotrun launch --discover ./discover.sh --min-hosts "${MIN_HOSTS:-2}" \
    --max-restarts 20 --network-interface "${IFACE:-ens5}" -- \
    --data "s3://$BUCKET/fm/train" --val-data "s3://$BUCKET/fm/test" \
    --checkpoint "s3://$BUCKET/spotrun/ck/$CLUSTER" \
    --checkpoint-every-seconds 300 --batch-size 512 \
    --metrics-file "metrics-$CLUSTER.jsonl"
