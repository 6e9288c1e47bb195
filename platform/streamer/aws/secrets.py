"""The JWT secret, read by ARN at cold start: SSM Parameter Store (SecureString) or Secrets Manager."""

from __future__ import annotations

import boto3

__all__ = ["read_secret"]


def read_secret(arn: str) -> str:
    """The secret's value. ``GetParameter`` accepts a parameter's full ARN as ``Name``
    (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetParameter.html)."""
    if ":ssm:" in arn:
        resp = boto3.client("ssm").get_parameter(Name=arn, WithDecryption=True)
        return str(resp["Parameter"]["Value"])
    return str(boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])
