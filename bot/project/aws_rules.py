"""What AWS accepts in a project's settings: regions, bucket names, ARNs, keywords, prices,
task lifetimes. Each rule cites the service model or page it comes from."""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from functools import cache

# USD per task that the public crowd accepts for custom tasks (SageMaker API model).
PUBLIC_CROWD_PRICES = tuple(
    Decimal(p)
    for p in (
        "0.012", "0.024", "0.036", "0.048", "0.060", "0.072", "0.120", "0.240",
        "0.360", "0.480", "0.600", "0.720", "0.840", "0.960", "1.080", "1.200",
    )
)  # fmt: skip


WORKTEAM_ARN_RE = re.compile(
    r"^arn:aws[a-z\-]*:sagemaker:(?P<region>[a-z0-9\-]+):(?P<account>\d{12}):"
    r"workteam/(?P<kind>private-crowd|public-crowd|vendor-crowd)/[A-Za-z0-9\-_.]+$"
)
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/[\w+=,.@\-/]{1,512}$")
LAMBDA_ARN_RE = re.compile(
    r"^arn:aws[a-z\-]*:lambda:[a-z0-9\-]+:\d{12}:function:[A-Za-z0-9\-_]+(:[\w$-]+)?$"
)
KEYWORD_RE = re.compile(r"^[A-Za-z0-9]+( [A-Za-z0-9]+)*$")


# TaskAvailabilityLifetimeInSeconds per workforce (SageMaker API model, HumanTaskConfig): the
# public crowd allows at most 12 hours and defaults to 6; private and vendor teams default to,
# and for most accounts allow at most, 30 days. An object nobody labels in time fails.
PUBLIC_AVAILABILITY_MAX = 43_200
TEAM_AVAILABILITY_MAX = 2_592_000
DEFAULT_AVAILABILITY = {
    "public": PUBLIC_AVAILABILITY_MAX,
    "private": 2_592_000,
    "vendor": 2_592_000,
}
# "MaxConcurrentTaskCount ... The default value is 1000 objects. To increase the maximum value to
# 5000 objects, contact Amazon Web Services Support." (SageMaker API model, HumanTaskConfig)
MAX_CONCURRENT_WITHOUT_SUPPORT = 1000


# SageMaker's endpoint prefix (botocore SageMaker model, metadata.endpointPrefix), named here so
# that listing its regions does not load the whole 4 MB service model first (a tenth of a
# second of every command's start-up); tests/test_cli.py checks it against the model.
SAGEMAKER_ENDPOINT_PREFIX = "api.sagemaker"


@cache
def known_regions() -> frozenset[str]:
    """Regions botocore knows for SageMaker in every partition, read from its own data (what
    boto3's `get_available_regions("sagemaker")` answers, partition by partition)."""
    from botocore.loaders import create_loader
    from botocore.regions import EndpointResolver

    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    regions: set[str] = set()
    for partition in resolver.get_available_partitions():
        regions.update(resolver.get_available_endpoints(SAGEMAKER_ENDPOINT_PREFIX, partition))
    return frozenset(regions)


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse this bucket name, or None; the rules are S3's general-purpose ones."""
    if not 3 <= len(name) <= 63:
        return f"{name!r} is {len(name)} characters long; S3 bucket names have 3 to 63."
    if not re.fullmatch(r"[a-z0-9.\-]+", name):
        return f"{name!r} may only contain lowercase letters, digits, dots and hyphens."
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"{name!r} must begin and end with a lowercase letter or a digit."
    if ".." in name:
        return f"{name!r} has two dots in a row."
    try:
        ipaddress.IPv4Address(name)
        return f"{name!r} looks like an IP address, which S3 does not allow."
    except ValueError:
        pass
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(prefix):
            return f"{name!r} starts with {prefix!r}, which S3 reserves."
    for suffix in ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"):
        if name.endswith(suffix):
            return f"{name!r} ends with {suffix!r}, which S3 reserves."
    return None
