#!/usr/bin/python3
"""sagemaker_hpo.py: a SageMaker hyperparameter tuning job over the spotrun
container, its objective read from the metrics line with MetricDefinitions.

SageMaker reads the training job's log (CloudWatch) with the regular
expressions in metric_definitions.json, e.g. `val_loss=([0-9.eE+-]+)`, and
spotrun prints one line per epoch that they match:

    epoch=3 step=705 train_loss=0.3512 val_loss=0.3861 val_accuracy=0.8712 ...

The tuner minimises val_loss. With TrainingJobEarlyStoppingType Auto,
SageMaker stops a training job whose objective is worse than the median of
the earlier jobs at the same epoch; the stop is a SIGTERM to the container,
and spotrun ends the job cleanly (exit 75). The data are spotrun shards in
S3 (`spotrun data import fashion-mnist --out s3://BUCKET/fashion-mnist`),
given as the train and validation channels.

    /usr/bin/python3 examples/hpo/sagemaker_hpo.py \\
        --image ACCOUNT.dkr.ecr.REGION.amazonaws.com/spotrun:latest \\
        --role arn:aws:iam::ACCOUNT:role/SageMakerRole \\
        --data s3://BUCKET/fashion-mnist --output s3://BUCKET/hpo

--dry-run checks the request against the SageMaker API model shipped with
botocore and prints it, without credentials or a call.
"""
import argparse
import json
import os
import sys
import time

import boto3
import botocore.session
from botocore.validate import ParamValidator

HERE = os.path.dirname(os.path.abspath(__file__))


def metric_definitions():
    with open(os.path.join(HERE, "metric_definitions.json")) as f:
        return json.load(f)


def tuning_request(opts):
    """The CreateHyperParameterTuningJob request."""
    channels = [
        {"ChannelName": name,
         "DataSource": {"S3DataSource": {
             "S3DataType": "S3Prefix", "S3Uri": f"{opts.data}/{split}",
             "S3DataDistributionType": "FullyReplicated"}},
         "InputMode": "File"}
        for name, split in (("train", "train"), ("validation", "test"))]
    stopping = {"MaxRuntimeInSeconds": opts.max_run}
    if opts.spot:
        stopping["MaxWaitTimeInSeconds"] = opts.max_wait
    return {
        "HyperParameterTuningJobName": opts.name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {
                "Type": "Minimize", "MetricName": "val_loss"},
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": opts.max_jobs,
                "MaxParallelTrainingJobs": opts.max_parallel},
            # Names are spotrun train options; values reach it as strings
            # through hyperparameters.json.
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.01",
                     "ScalingType": "Logarithmic"},
                    {"Name": "weight-decay", "MinValue": "0.000001",
                     "MaxValue": "0.001", "ScalingType": "Logarithmic"}],
                "CategoricalParameterRanges": [
                    {"Name": "hidden",
                     "Values": ["128", "256,128", "512,256"]}],
            },
            "TrainingJobEarlyStoppingType": "Auto",
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {
                "epochs": str(opts.epochs), "batch-size": "256",
                "progress": "off"},
            "AlgorithmSpecification": {
                "TrainingImage": opts.image, "TrainingInputMode": "File",
                "MetricDefinitions": metric_definitions()},
            "RoleArn": opts.role,
            "InputDataConfig": channels,
            "OutputDataConfig": {"S3OutputPath": opts.output},
            "ResourceConfig": {"InstanceType": opts.instance_type,
                               "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": opts.spot,
        },
    }


def validate(request):
    """Check the request against botocore's SageMaker model; no network."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateHyperParameterTuningJob").input_shape
    report = ParamValidator().validate(request, shape)
    if report.has_errors():
        sys.exit("sagemaker_hpo: invalid request:\n" +
                 report.generate_report())


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--image", required=True, help="the spotrun training image in ECR")
    a("--role", required=True, help="SageMaker execution role ARN")
    a("--data", required=True,
      help="S3 prefix holding train/ and test/ spotrun datasets")
    a("--output", required=True, help="S3 prefix for the models")
    a("--name", default=time.strftime("spotrun-%Y%m%d-%H%M%S"),
      help="tuning job name (32 characters at most)")
    a("--instance-type", default="ml.g5.xlarge")
    a("--epochs", type=int, default=10)
    a("--max-jobs", type=int, default=20)
    a("--max-parallel", type=int, default=4)
    a("--spot", action="store_true", help="managed spot training")
    a("--max-run", type=int, default=3600, help="seconds per training job")
    a("--max-wait", type=int, default=7200,
      help="seconds per spot job, waiting for capacity included")
    a("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    a("--dry-run", action="store_true",
      help="validate and print the request; call nothing")
    opts = p.parse_args(argv)

    request = tuning_request(opts)
    validate(request)
    if opts.dry_run:
        print(json.dumps(request, indent=1))
        return 0
    sm = boto3.client("sagemaker", region_name=opts.region)
    arn = sm.create_hyper_parameter_tuning_job(**request)[
        "HyperParameterTuningJobArn"]
    print(f"started {arn}\nwatch it with: aws sagemaker "
          "describe-hyper-parameter-tuning-job "
          f"--hyper-parameter-tuning-job-name {opts.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
