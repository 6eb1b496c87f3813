"""S3: buckets with CORS and Block Public Access, uploads that skip what is there, listings.

Every function takes the client first and returns a frozen dataclass, so callers never handle raw
responses and tests can hand in a Stubber'd or emulator-backed client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from aws.error_messages import aws_call, error_code
from bot.errors import AwsError, NotFoundError, UsageError

# The rule Ground Truth's worker pages need on the data and output buckets (the MARS recipe's).
GROUND_TRUTH_CORS_RULE: dict[str, Any] = {
    "AllowedHeaders": [],
    "AllowedMethods": ["GET"],
    "AllowedOrigins": ["*"],
    "ExposeHeaders": ["Access-Control-Allow-Origin"],
}
# "You can add up to 100 rules to the configuration" (botocore S3 model, CORSConfiguration).
MAX_CORS_RULES = 100
BLOCK_ALL_PUBLIC = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


@dataclass(frozen=True)
class BucketResult:
    name: str
    created: bool
    changes: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.created or bool(self.changes)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class UploadItem:
    """A local file for a key. `size` and `md5` come from the caller's cache when it knows
    this file as it is now (same path, size and mtime), so an unchanged file is never read."""

    path: Path
    key: str
    size: int
    md5: str | None = None


@dataclass(frozen=True)
class UploadResult:
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]
    # key -> the object's ETag now in S3, for every key uploaded or found unchanged: the MD5
    # of the content for a single-part upload without SSE-KMS, which is what gtbot does.
    etags: dict[str, str]


def bucket_region(client: Any, bucket: str) -> str:
    location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    # S3 reports us-east-1 as None and the legacy EU as "EU".
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def _normalise_cors(rule: dict[str, Any]) -> dict[str, Any]:
    keys = ("AllowedHeaders", "AllowedMethods", "AllowedOrigins", "ExposeHeaders")
    return {k: sorted(rule.get(k, [])) for k in keys}


def _with_ground_truth_rule(
    bucket: str, current: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """The bucket's rules plus Ground Truth's, or None when it is already there.

    PutBucketCors replaces the whole configuration ("If the configuration exists, Amazon S3
    replaces it", botocore S3 model, PutBucketCors), so the rules another application put on a
    shared bucket are written back untouched, with ours after them.
    """
    wanted = _normalise_cors(GROUND_TRUTH_CORS_RULE)
    if any(_normalise_cors(rule) == wanted for rule in current):
        return None
    if len(current) >= MAX_CORS_RULES:
        raise AwsError(
            f"Bucket {bucket} already has {len(current)} CORS rules, the most S3 allows, so "
            "gtbot cannot add Ground Truth's (GET from any origin). Remove one and run setup again."
        )
    return [*current, GROUND_TRUTH_CORS_RULE]


def ensure_bucket(
    client: Any, bucket: str, region: str, *, cors: bool, tags: dict[str, str] | None = None
) -> BucketResult:
    """Create the bucket if needed and bring CORS, public-access settings and tags to the
    contract.

    Idempotent: reads first and writes only what differs, so a second run reports no change.
    """
    created = False
    with aws_call(f"check bucket {bucket}"):
        try:
            client.head_bucket(Bucket=bucket)
            exists = True
        except ClientError as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                exists = False
            elif code in ("403", "AccessDenied", "Forbidden"):
                raise AwsError(
                    f"Bucket {bucket} already exists and belongs to another AWS account (or your "
                    "credentials may not read it). Bucket names are global: choose another name "
                    "in project-config.yml."
                ) from None
            else:
                raise
    if not exists:
        with aws_call(f"create bucket {bucket} in {region}"):
            params: dict[str, Any] = {"Bucket": bucket}
            if region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                client.create_bucket(**params)
                created = True
            except ClientError as exc:
                if error_code(exc) == "BucketAlreadyExists":
                    raise AwsError(
                        f"Bucket {bucket} belongs to another AWS account. Bucket names are "
                        "global: choose another name in project-config.yml."
                    ) from None
                if error_code(exc) != "BucketAlreadyOwnedByYou":
                    raise
    with aws_call(f"read the region of bucket {bucket}"):
        actual = bucket_region(client, bucket)
    if actual != region:
        raise AwsError(
            f"Bucket {bucket} exists in {actual}, but the project's region is {region}. Ground "
            f"Truth needs its buckets in the job's region: set `region: {actual}` or use "
            "another bucket name."
        )
    changes: list[str] = []
    if cors:
        with aws_call(f"read the CORS rules of {bucket}"):
            try:
                current = client.get_bucket_cors(Bucket=bucket).get("CORSRules", [])
            except ClientError as exc:
                if error_code(exc) != "NoSuchCORSConfiguration":
                    raise
                current = []
        rules = _with_ground_truth_rule(bucket, current)
        if rules is not None:
            with aws_call(f"set the CORS rule on {bucket}"):
                client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
            changes.append("CORS rule set" if not current else "CORS rule added beside the others")
    with aws_call(f"read the public access block of {bucket}"):
        try:
            # Optional in the answer (botocore S3 model, GetPublicAccessBlockOutput).
            answer = client.get_public_access_block(Bucket=bucket)
            block = answer.get("PublicAccessBlockConfiguration", {})
        except ClientError as exc:
            if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
                raise
            block = {}
    if any(not block.get(k) for k in BLOCK_ALL_PUBLIC):
        with aws_call(f"block public access on {bucket}"):
            client.put_public_access_block(
                Bucket=bucket, PublicAccessBlockConfiguration=BLOCK_ALL_PUBLIC
            )
        changes.append("public access blocked")
    warnings: list[str] = []
    if tags:
        tagged, problem = ensure_bucket_tags(client, bucket, tags)
        changes += [tagged] if tagged else []
        warnings += [problem] if problem else []
    return BucketResult(bucket, created, tuple(changes), tuple(warnings))


# "You can add up to 50 tags to a bucket" (S3 user guide, "Using cost allocation S3 bucket
# tags", https://docs.aws.amazon.com/AmazonS3/latest/userguide/CostAllocTagging.html).
MAX_BUCKET_TAGS = 50


def ensure_bucket_tags(
    client: Any, bucket: str, tags: dict[str, str]
) -> tuple[str | None, str | None]:
    """Add the tags the bucket lacks, keeping every tag it has (an existing key keeps its
    value). PutBucketTagging "will overwrite any current tags the bucket already has. You
    cannot use this operation to add tags to an existing list of tags" (botocore S3 model),
    so the whole set is read, merged and written back. Tags serve cost allocation only: a
    bucket that cannot be tagged is reported (the second value), and setup goes on."""
    try:
        try:
            current = client.get_bucket_tagging(Bucket=bucket).get("TagSet", [])
        except ClientError as exc:
            if error_code(exc) != "NoSuchTagSet":
                raise
            current = []
        have = {str(t["Key"]) for t in current}
        missing = [{"Key": k, "Value": v} for k, v in tags.items() if k not in have]
        if not missing:
            return None, None
        if len(current) + len(missing) > MAX_BUCKET_TAGS:
            return None, f"not tagged: it has {len(current)} tags, and S3 allows {MAX_BUCKET_TAGS}"
        client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [*current, *missing]})
    except ClientError as exc:
        return None, (
            f"not tagged for cost allocation ({error_code(exc)}): gtbot needs "
            "s3:GetBucketTagging and s3:PutBucketTagging on it (`iam-policy <project>`)"
        )
    return "tagged " + ", ".join(f"{t['Key']}={t['Value']}" for t in missing), None


def iter_objects(client: Any, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    """Every object under a prefix, through all pages (not just the first 1,000)."""
    with aws_call(f"list s3://{bucket}/{prefix}"):
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    key=obj["Key"], size=int(obj["Size"]), etag=str(obj["ETag"]).strip('"')
                )


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload_files(
    client: Any,
    bucket: str,
    items: Iterable[UploadItem],
    *,
    existing: dict[str, ObjectInfo],
    workers: int = 8,
    done: Callable[[], None] | None = None,
    content_type: Callable[[Path], str] | None = None,
) -> UploadResult:
    """Upload in parallel, skipping objects already there with the same size and MD5.

    A key absent from `existing` (one listing, not a HEAD per object) is uploaded without
    hashing the file. A key present with the same size is compared by MD5, from the item when
    the caller knows it, else by reading the file. Single-part puts keep the ETag equal to the
    MD5 (botocore S3 model, Object.ETag: objects "created by the PUT Object ... operation ...
    and are encrypted by SSE-S3 or plaintext, have ETags that are an MD5 digest of their
    object data"), and the ETag each put returns is handed back so the caller need not hash
    what it just sent. (Under SSE-KMS the ETag is not an MD5: a changed or uncached file is
    then uploaded again, and a cached one still matches the ETag its own upload returned.)
    """
    todo = list(items)
    uploaded: list[str] = []
    skipped: list[str] = []
    failed: list[tuple[str, str]] = []
    etags: dict[str, str] = {}

    def one(item: UploadItem) -> tuple[bool, str]:
        known = existing.get(item.key)
        if known is not None and known.size == item.size:
            md5 = item.md5 or file_md5(item.path)
            if known.etag == md5:
                return False, md5
        extra = {"ContentType": content_type(item.path)} if content_type else {}
        with item.path.open("rb") as body:
            response = client.put_object(Bucket=bucket, Key=item.key, Body=body, **extra)
        return True, str(response.get("ETag", "")).strip('"')

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, item): item for item in todo}
        for future in as_completed(futures):
            item = futures[future]
            try:
                sent, etag = future.result()
            except (ClientError, OSError) as exc:
                reason = (
                    error_code(exc) if isinstance(exc, ClientError) else exc.strerror or str(exc)
                )
                failed.append((str(item.path), reason))
            else:
                (uploaded if sent else skipped).append(item.key)
                if etag:
                    etags[item.key] = etag
            if done:
                done()
    return UploadResult(
        tuple(sorted(uploaded)), tuple(sorted(skipped)), tuple(sorted(failed)), etags
    )


def put_bytes(client: Any, bucket: str, key: str, body: bytes, content_type: str) -> str:
    with aws_call(f"write s3://{bucket}/{key}"):
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    return f"s3://{bucket}/{key}"


def get_bytes(client: Any, bucket: str, key: str) -> bytes:
    with aws_call(f"read s3://{bucket}/{key}"):
        try:
            return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                raise NotFoundError(f"s3://{bucket}/{key} does not exist.") from None
            raise


def iter_lines(client: Any, bucket: str, key: str) -> Iterator[bytes]:
    """Stream an object line by line (raw bytes), so a large manifest never sits in memory."""
    with aws_call(f"read s3://{bucket}/{key}"):
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                raise NotFoundError(
                    f"s3://{bucket}/{key} does not exist: is the job finished, and the bucket right?"
                ) from None
            raise
        yield from body.iter_lines()


@dataclass(frozen=True)
class LinkLifetime:
    """How long a presigned link really works, and why.

    A presigned URL stops working when the credentials that signed it expire, whatever its
    `ExpiresIn` says: with IAM role credentials "the presigned URL expires when the role session
    expires, even if you specify a longer expiration time"; IAM user keys allow up to 7 days
    (S3 user guide, "Expiration time for presigned URLs",
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html).
    """

    seconds: int
    expires_at: datetime
    cut_by_credentials: bool

    def text(self) -> str:
        """What a message says about the link: its real lifetime, and why when it is short."""
        if self.seconds >= 3600 and self.seconds % 3600 == 0:
            span = f"{self.seconds // 3600} h"
        elif self.seconds >= 3600:
            span = f"{self.seconds // 3600} h {self.seconds % 3600 // 60} min"
        else:
            span = f"{max(1, self.seconds // 60)} min"
        until = self.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        if not self.cut_by_credentials:
            return f"valid for {span}, until {until}"
        return (
            f"valid for only {span}, until {until}: the AWS credentials that signed it expire "
            "then (role and SSO sessions last 1-12 h); ask for `results` again for fresh links"
        )


def link_lifetime(
    wanted_seconds: int, credentials_expire_at: datetime | None, now: datetime | None = None
) -> LinkLifetime:
    """The earlier of what the lab asked for (GTBOT_LINK_HOURS) and the signing credentials'
    expiry; S3 refuses `ExpiresIn` beyond 7 days (604,800 s) in any case."""
    now = now or datetime.now(UTC)
    seconds = min(wanted_seconds, 604_800)
    cut = False
    if credentials_expire_at is not None:
        left = int((credentials_expire_at - now).total_seconds())
        if left < seconds:
            seconds, cut = max(left, 1), True
    return LinkLifetime(seconds, now + timedelta(seconds=seconds), cut)


def presign_get(client: Any, bucket: str, key: str, expires_seconds: int) -> str:
    with aws_call(f"sign a link to s3://{bucket}/{key}"):
        return str(
            client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_seconds
            )
        )


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, slash, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not slash or not bucket:
        raise UsageError(f"{uri!r} is not an S3 URI like s3://bucket/path/to/object.")
    return bucket, key
