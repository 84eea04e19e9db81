#!/usr/bin/python3
"""Run spotrun as a SageMaker training job on managed spot capacity.

    python3 estimator.py --image ACCOUNT.dkr.ecr.REGION.amazonaws.com/spotrun:latest \
        --role arn:aws:iam::ACCOUNT:role/SageMakerRole \
        --train s3://BUCKET/fm/train --validation s3://BUCKET/fm/test \
        --checkpoints s3://BUCKET/spotrun/checkpoints/fm-run-1

Needs the SageMaker Python SDK (pip install sagemaker) and an image built
from the repository's Dockerfile and pushed to ECR. Managed spot training
sends SIGTERM on an interruption; spotrun (PID 1) turns it into SIGUSR1 for
every rank, commits a checkpoint to /opt/ml/checkpoints, which SageMaker
copies to checkpoint_s3_uri, and exits 75; the resumed job copies it back
and spotrun continues from that step.
"""
import argparse
import json
import os

from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--role", required=True)
    ap.add_argument("--train", required=True, help="s3:// prefix of train shards")
    ap.add_argument("--validation", help="s3:// prefix of validation shards")
    ap.add_argument("--checkpoints", required=True,
                    help="s3:// prefix that keeps this job's checkpoints")
    ap.add_argument("--instance-type", default="ml.g5.xlarge")
    ap.add_argument("--instance-count", type=int, default=1)
    ap.add_argument("--max-run", type=int, default=3600)
    ap.add_argument("--max-wait", type=int, default=7200)
    a = ap.parse_args()

    # the same regexes SageMaker HPO uses (examples/hpo)
    with open(os.path.join(HERE, "..", "hpo", "metric_definitions.json")) as f:
        metric_definitions = json.load(f)

    est = Estimator(
        image_uri=a.image,
        role=a.role,
        instance_count=a.instance_count,
        instance_type=a.instance_type,
        use_spot_instances=True,
        max_run=a.max_run,
        max_wait=a.max_wait,
        checkpoint_s3_uri=a.checkpoints,
        checkpoint_local_path="/opt/ml/checkpoints",
        metric_definitions=metric_definitions,
        hyperparameters={
            "hidden": "256,128",
            "epochs": 10,
            "batch-size": 256,
            "lr": 0.003,
            "optimizer": "adamw",
            # every epoch, and every 5 minutes in between
            "checkpoint-every-seconds": 300,
            # "processes-per-host": 1,   # default: one per GPU
        },
    )
    inputs = {"train": TrainingInput(a.train, input_mode="FastFile")}
    if a.validation:
        inputs["validation"] = TrainingInput(a.validation, input_mode="FastFile")
    est.fit(inputs, wait=True)


if __name__ == "__main__":
    main()
