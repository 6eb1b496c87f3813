"""AWS failures read as advice: what went wrong and what to check, never a stack trace."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber

from aws import groundtruth as gt
from aws.error_messages import aws_call
from bot.errors import AwsError, NotFoundError


@pytest.mark.parametrize(
    ("code", "status", "kind", "advice"),
    [
        ("AccessDeniedException", 400, AwsError, "not allowed to do this. Check the IAM policy"),
        ("ThrottlingException", 400, AwsError, "throttling requests even after retries"),
        ("ResourceNotFound", 400, NotFoundError, "Could not describe labeling job nope"),
        ("ValidationException", 400, AwsError, "AWS said: bad things"),
        ("InternalFailure", 500, AwsError, "server error (InternalFailure) even after retries"),
        ("ExpiredTokenException", 400, AwsError, "session token has expired"),
    ],
)
def test_client_errors_become_messages(code: str, status: int, kind: type, advice: str) -> None:
    client = boto3.client("sagemaker", region_name="us-east-2")
    with Stubber(client) as stub:
        stub.add_client_error(
            "describe_labeling_job",
            code,
            "bad things",
            status,
            expected_params={"LabelingJobName": "nope"},
        )
        with pytest.raises(kind) as info:
            gt.describe_labeling_job(client, "nope")
    assert advice in info.value.user_message


def test_missing_bucket_and_credentials_and_network() -> None:
    client = boto3.client("s3", region_name="us-east-2")
    with Stubber(client) as stub:
        stub.add_client_error("get_object", "NoSuchBucket", "gone", 404)
        with pytest.raises(NotFoundError, match="Run `setup <project>` first"), aws_call("read x"):
            client.get_object(Bucket="b", Key="k")
    with pytest.raises(AwsError, match="no AWS credentials found.*gtbot sandbox"), aws_call("list"):
        raise NoCredentialsError()
    with pytest.raises(AwsError, match="cannot reach http://127.0.0.1:9"), aws_call("list"):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
