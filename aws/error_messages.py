"""Turn AWS exceptions into messages that say what to check, never a stack trace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from bot.errors import AwsError, NameInUseError, NotFoundError

_CODE_ADVICE = {
    "AccessDenied": "the credentials in use are not allowed to do this. Check the IAM policy of "
    "the user or role gtbot runs as (see the README's 'AWS permissions').",
    "AccessDeniedException": "the credentials in use are not allowed to do this. Check the IAM "
    "policy of the user or role gtbot runs as (see the README's 'AWS permissions').",
    "InvalidAccessKeyId": "the AWS access key is not valid. Check AWS_ACCESS_KEY_ID or your profile.",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key. Check your credentials.",
    "ExpiredToken": "the AWS session token has expired. Refresh your credentials (e.g. `aws sso login`).",
    "ExpiredTokenException": "the AWS session token has expired. Refresh your credentials.",
    "ThrottlingException": "AWS is throttling requests even after retries. Wait a minute and try again.",
    "SlowDown": "S3 asked to slow down even after retries. Wait a minute and try again.",
    "ResourceLimitExceeded": "an account limit was reached (e.g. concurrent labeling jobs). "
    "Stop a job or ask AWS support for a higher limit.",
}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)


@contextmanager
def aws_call(action: str) -> Iterator[None]:
    """Wrap one user-visible AWS step so that its failure reads as advice."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code in ("NoSuchBucket",):
            raise NotFoundError(
                f"Could not {action}: the bucket does not exist. Run `setup <project>` first."
            ) from None
        if code in ("ResourceNotFound", "ResourceNotFoundException"):
            raise NotFoundError(f"Could not {action}: {error_message(exc)}") from None
        if code == "ResourceInUse":
            raise NameInUseError(
                f"Could not {action}: {error_message(exc)} Labeling job names are unique forever "
                "in an account and region; submit again to get a new name."
            ) from None
        advice = _CODE_ADVICE.get(code)
        if advice:
            raise AwsError(f"Could not {action}: {advice}") from None
        if code == "ValidationException":
            raise AwsError(f"Could not {action}: AWS said: {error_message(exc)}") from None
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int) and status >= 500:
            raise AwsError(
                f"Could not {action}: AWS answered with a server error ({code or status}) even "
                "after retries. Try again in a few minutes."
            ) from None
        raise AwsError(f"Could not {action}: {code}: {error_message(exc)}") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise AwsError(
            f"Could not {action}: no AWS credentials found. Set AWS_PROFILE (or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or run `gtbot sandbox` to try "
            "gtbot without an AWS account."
        ) from None
    except NoRegionError:
        raise AwsError(
            f"Could not {action}: no AWS region; set `region:` in the project."
        ) from None
    except EndpointConnectionError as exc:
        raise AwsError(
            f"Could not {action}: cannot reach {exc.kwargs.get('endpoint_url', 'AWS')}. Check the "
            "network, or the AWS_ENDPOINT_URL* variables if you point gtbot at an emulator."
        ) from None
    except BotoCoreError as exc:
        raise AwsError(f"Could not {action}: {exc}") from None
