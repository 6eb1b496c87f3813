"""aws/s3.py one call at a time: botocore's Stubber checks each request's parameters, and a
fake client we control stands in for the parallel uploads. The flows are in test_s3_steps."""

from __future__ import annotations

import hashlib
import io
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from aws import s3
from bot.errors import AwsError, NotFoundError, UsageError

GT_RULE = s3.GROUND_TRUTH_CORS_RULE
DENIED = (
    "the credentials in use are not allowed to do this. Check the IAM policy of the user or "
    "role gtbot runs as (see the README's 'AWS permissions')."
)


def _client() -> Any:
    return boto3.client("s3", region_name="us-east-2")


@pytest.mark.parametrize("key", ["AllowedHeaders", "AllowedMethods", "AllowedOrigins"])
def test_a_rule_that_differs_from_ground_truths_in_one_list_is_kept_and_ours_added(
    key: str,
) -> None:
    theirs = {**GT_RULE, key: [*GT_RULE[key], "X-Other"]}
    assert s3._with_ground_truth_rule("b", [theirs]) == [theirs, GT_RULE]


def test_ground_truths_rule_is_found_whatever_the_order_of_its_lists() -> None:
    same = {k: list(reversed(v)) for k, v in GT_RULE.items()} | {"AllowedMethods": ["GET"]}
    assert s3._with_ground_truth_rule("b", [{"AllowedMethods": ["PUT"]}, same]) is None
    no_expose = {k: v for k, v in GT_RULE.items() if k != "ExposeHeaders"}
    assert s3._with_ground_truth_rule("b", [no_expose]) == [no_expose, GT_RULE]
    # A rule with an id or a max age is still ours when the four lists are.
    assert s3._with_ground_truth_rule("b", [{**GT_RULE, "ID": "gt", "MaxAgeSeconds": 60}]) is None


def test_a_bucket_with_the_most_cors_rules_s3_allows_is_refused_word_for_word() -> None:
    other = {"AllowedMethods": ["PUT"], "AllowedOrigins": ["https://lab.example"]}
    assert s3._with_ground_truth_rule("b", [other] * 99) == [*[other] * 99, GT_RULE]
    with pytest.raises(AwsError) as info:
        s3._with_ground_truth_rule("lab-data", [other] * 100)
    assert info.value.user_message == (
        "Bucket lab-data already has 100 CORS rules, the most S3 allows, so gtbot cannot add "
        "Ground Truth's (GET from any origin). Remove one and run setup again."
    )


def test_tags_are_added_to_a_bucket_without_any() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("get_bucket_tagging", {"TagSet": []}, {"Bucket": "b"})
        stub.add_response(
            "put_bucket_tagging",
            {},
            {
                "Bucket": "b",
                "Tagging": {
                    "TagSet": [
                        {"Key": "gtbot:project", "Value": "mice"},
                        {"Key": "gtbot:requested-by", "Value": "U1"},
                    ]
                },
            },
        )
        tags = {"gtbot:project": "mice", "gtbot:requested-by": "U1"}
        assert s3.ensure_bucket_tags(client, "b", tags) == (
            "tagged gtbot:project=mice, gtbot:requested-by=U1",
            None,
        )


def test_listing_goes_through_every_page_under_the_prefix() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_response(
            "list_objects_v2",
            {
                "Contents": [{"Key": "p/a.jpg", "Size": 3, "ETag": '"abc"'}],
                "IsTruncated": True,
                "NextContinuationToken": "t",
            },
            {"Bucket": "b", "Prefix": "p/"},
        )
        stub.add_response(
            "list_objects_v2",
            {"Contents": [{"Key": "p/b.jpg", "Size": 4, "ETag": '"d-2"'}], "IsTruncated": False},
            {"Bucket": "b", "Prefix": "p/", "ContinuationToken": "t"},
        )
        assert list(s3.iter_objects(client, "b", "p/")) == [
            s3.ObjectInfo("p/a.jpg", 3, "abc"),
            s3.ObjectInfo("p/b.jpg", 4, "d-2"),
        ]
        stub.add_client_error("list_objects_v2", "AccessDenied", "no", 403)
        with pytest.raises(AwsError) as info:
            list(s3.iter_objects(client, "b", "p/"))
    assert info.value.user_message == f"Could not list s3://b/p/: {DENIED}"


def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def test_reading_an_object_and_what_each_failure_says() -> None:
    client = _client()
    where = {"Bucket": "b", "Key": "out/output.manifest"}
    with Stubber(client) as stub:
        stub.add_response("get_object", {"Body": _body(b"a\nb\n")}, where)
        assert s3.get_bytes(client, "b", "out/output.manifest") == b"a\nb\n"
        stub.add_response("get_object", {"Body": _body(b"a\nb\n")}, where)
        assert list(s3.iter_lines(client, "b", "out/output.manifest")) == [b"a", b"b"]
        for code in ("NoSuchKey", "404"):
            stub.add_client_error("get_object", code, "gone", 404)
            with pytest.raises(NotFoundError) as info:
                s3.get_bytes(client, "b", "out/output.manifest")
            assert info.value.user_message == "s3://b/out/output.manifest does not exist."
            stub.add_client_error("get_object", code, "gone", 404)
            with pytest.raises(NotFoundError) as info:
                list(s3.iter_lines(client, "b", "out/output.manifest"))
            assert info.value.user_message == (
                "s3://b/out/output.manifest does not exist: is the job finished, and the "
                "bucket right?"
            )
        stub.add_client_error("get_object", "AccessDenied", "no", 403)
        with pytest.raises(AwsError) as info:
            s3.get_bytes(client, "b", "k")
        assert info.value.user_message == f"Could not read s3://b/k: {DENIED}"
        stub.add_client_error("get_object", "AccessDenied", "no", 403)
        with pytest.raises(AwsError) as info:
            list(s3.iter_lines(client, "b", "k"))
        assert info.value.user_message == f"Could not read s3://b/k: {DENIED}"


def test_writing_bytes_sends_their_content_type() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_response(
            "put_object",
            {},
            {"Bucket": "b", "Key": "t/ui.liquid", "Body": b"<p>", "ContentType": "text/html"},
        )
        assert s3.put_bytes(client, "b", "t/ui.liquid", b"<p>", "text/html") == "s3://b/t/ui.liquid"
        stub.add_client_error("put_object", "AccessDenied", "no", 403)
        with pytest.raises(AwsError) as info:
            s3.put_bytes(client, "b", "k", b"", "text/plain")
    assert info.value.user_message == f"Could not write s3://b/k: {DENIED}"


def test_a_link_is_signed_for_the_object_and_its_lifetime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = s3.presign_get(_client(), "b", "out/a b.csv", 600)
    assert "/b/out/a%20b.csv?" in url and "X-Amz-Expires=600" in url
    # Without credentials there is nothing to sign with: the message says what to set.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(AwsError) as info:
        s3.presign_get(boto3.Session().client("s3", region_name="us-east-2"), "b", "k", 600)
    assert info.value.user_message == (
        "Could not sign a link to s3://b/k: no AWS credentials found. Set AWS_PROFILE (or "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or run `gtbot sandbox` to try gtbot "
        "without an AWS account."
    )


def test_s3_uris_word_for_word() -> None:
    assert s3.split_s3_uri("s3://b/k/x.jpg") == ("b", "k/x.jpg")
    assert s3.split_s3_uri("s3://b/") == ("b", "")
    for bad in ("s3://bucket-only", "https://b/k", "b/k", "s3:/b/k", "s3:///k", "s3://"):
        with pytest.raises(UsageError) as info:
            s3.split_s3_uri(bad)
        assert info.value.user_message == (
            f"{bad!r} is not an S3 URI like s3://bucket/path/to/object."
        )


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "span"),
    [(59, "1 min"), (60, "1 min"), (3599, "59 min"), (3600, "1 h"), (3660, "1 h 1 min"),
     (7200, "2 h"), (7201, "2 h 0 min"), (7259, "2 h 0 min"), (86400, "24 h")],
)  # fmt: skip
def test_link_lifetimes_read_as_spans(seconds: int, span: str) -> None:
    life = s3.LinkLifetime(seconds, NOW + timedelta(seconds=seconds), False)
    until = (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M UTC")
    assert life.text() == f"valid for {span}, until {until}"
    cut = s3.LinkLifetime(seconds, NOW + timedelta(seconds=seconds), True)
    assert cut.text() == (
        f"valid for only {span}, until {until}: the AWS credentials that signed it expire then "
        "(role and SSO sessions last 1-12 h); ask for `results` again for fresh links"
    )


def test_a_link_lasts_as_asked_unless_the_credentials_end_first() -> None:
    asked = s3.link_lifetime(3600, NOW + timedelta(seconds=3600), now=NOW)
    assert asked == s3.LinkLifetime(3600, NOW + timedelta(hours=1), False)
    cut = s3.link_lifetime(3600, NOW + timedelta(seconds=3599), now=NOW)
    assert cut == s3.LinkLifetime(3599, NOW + timedelta(seconds=3599), True)
    gone = s3.link_lifetime(3600, NOW - timedelta(minutes=5), now=NOW)
    assert gone.seconds == 1 and gone.cut_by_credentials
    assert s3.link_lifetime(10**7, None, now=NOW).seconds == 604_800


class FakeS3:
    """put_object as S3 answers it; a key in `refuse` answers AccessDenied."""

    def __init__(
        self, refuse: frozenset[str] = frozenset(), broken: frozenset[str] = frozenset()
    ) -> None:
        self.refuse = refuse
        self.broken = broken
        self.puts: list[dict[str, Any]] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def put_object(self, *, Bucket: str, Key: str, Body: Any, **extra: Any) -> dict[str, Any]:  # noqa: N803
        data = Body.read()
        with self.lock:
            self.threads.add(threading.get_ident())
            self.puts.append({"Bucket": Bucket, "Key": Key, "Body": data, **extra})
        if Key in self.refuse:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")
        if Key in self.broken:
            raise OSError("connection reset by peer")  # no errno, so no strerror
        if Key.endswith(".noetag"):
            return {}
        return {"ETag": f'"{hashlib.md5(data).hexdigest()}"'}


def test_uploads_skip_what_is_there_and_report_each_failure(tmp_path: Path) -> None:
    files = {}
    for name, data in (("a.jpg", b"aaa"), ("b.jpg", b"bbbb"), ("c.jpg", b"cc"), ("d.jpg", b"d")):
        (tmp_path / name).write_bytes(data)
        files[name] = hashlib.md5(data).hexdigest()
    items = [
        s3.UploadItem(tmp_path / "a.jpg", "f/a.jpg", 3),  # there, same bytes: hashed, skipped
        s3.UploadItem(tmp_path / "b.jpg", "f/b.jpg", 4, files["b.jpg"]),  # cached md5: skipped
        s3.UploadItem(tmp_path / "c.jpg", "f/c.jpg", 2),  # there with other bytes: sent
        s3.UploadItem(tmp_path / "d.jpg", "f/d.jpg", 1),  # refused
        s3.UploadItem(tmp_path / "gone.jpg", "f/gone.jpg", 5),  # deleted since it was listed
    ]
    existing = {
        "f/a.jpg": s3.ObjectInfo("f/a.jpg", 3, files["a.jpg"]),
        "f/b.jpg": s3.ObjectInfo("f/b.jpg", 4, files["b.jpg"]),
        "f/c.jpg": s3.ObjectInfo("f/c.jpg", 2, "0" * 32),
    }
    client, ticks = FakeS3(frozenset({"f/d.jpg"})), []
    result = s3.upload_files(
        client,
        "lab",
        items,
        existing=existing,
        workers=1,
        done=lambda: ticks.append(1),
        content_type=lambda p: "image/jpeg",
    )
    assert result == s3.UploadResult(
        uploaded=("f/c.jpg",),
        skipped=("f/a.jpg", "f/b.jpg"),
        failed=(
            (str(tmp_path / "d.jpg"), "AccessDenied"),
            (str(tmp_path / "gone.jpg"), "No such file or directory"),
        ),
        etags={"f/a.jpg": files["a.jpg"], "f/b.jpg": files["b.jpg"], "f/c.jpg": files["c.jpg"]},
    )
    assert len(ticks) == 5
    assert sorted((p["Key"], p["ContentType"], p["Body"]) for p in client.puts) == [
        ("f/c.jpg", "image/jpeg", b"cc"),
        ("f/d.jpg", "image/jpeg", b"d"),
    ]
    # Without a content type, none is sent (S3 then stores binary/octet-stream).
    client = FakeS3(broken=frozenset({"f/d.jpg"}))
    odd = s3.UploadItem(tmp_path / "a.jpg", "f/a.noetag", 3)
    result = s3.upload_files(client, "lab", [items[2], items[3], odd], existing={})
    assert sorted(p["Key"] for p in client.puts) == ["f/a.noetag", "f/c.jpg", "f/d.jpg"]
    assert client.puts[0].keys() == {"Bucket", "Key", "Body"}
    assert result.failed == ((str(tmp_path / "d.jpg"), "connection reset by peer"),)
    assert result.etags == {"f/c.jpg": files["c.jpg"]}  # no ETag answered: none recorded


def test_file_md5_reads_files_larger_than_one_chunk(tmp_path: Path) -> None:
    data = bytes(range(256)) * 8193  # just over 2 MiB: three reads of 1 MiB
    (tmp_path / "big").write_bytes(data)
    assert s3.file_md5(tmp_path / "big") == hashlib.md5(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert s3.file_md5(tmp_path / "empty") == "d41d8cd98f00b204e9800998ecf8427e"


BLOCKED = {"PublicAccessBlockConfiguration": s3.BLOCK_ALL_PUBLIC}


def _settled(stub: Stubber, bucket: str, location: str | None, cors: list | None) -> None:
    """The reads of a bucket that is already as the contract wants it."""
    stub.add_response(
        "get_bucket_location",
        {"LocationConstraint": location} if location else {},
        {"Bucket": bucket},
    )
    if cors is not None:
        stub.add_response("get_bucket_cors", {"CORSRules": cors}, {"Bucket": bucket})
    stub.add_response("get_public_access_block", BLOCKED, {"Bucket": bucket})


def test_a_new_bucket_is_created_in_its_region_with_cors_block_and_tags() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_client_error("head_bucket", "404", "Not Found", 404, {"Bucket": "b"})
        stub.add_response(
            "create_bucket",
            {},
            {"Bucket": "b", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}},
        )
        stub.add_response("get_bucket_location", {"LocationConstraint": "EU"}, {"Bucket": "b"})
        stub.add_client_error("get_bucket_cors", "NoSuchCORSConfiguration", "none", 404)
        stub.add_response(
            "put_bucket_cors", {}, {"Bucket": "b", "CORSConfiguration": {"CORSRules": [GT_RULE]}}
        )
        stub.add_client_error(
            "get_public_access_block", "NoSuchPublicAccessBlockConfiguration", "none", 404
        )
        stub.add_response(
            "put_public_access_block",
            {},
            {"Bucket": "b", "PublicAccessBlockConfiguration": s3.BLOCK_ALL_PUBLIC},
        )
        stub.add_client_error("get_bucket_tagging", "NoSuchTagSet", "none", 404)
        stub.add_response(
            "put_bucket_tagging",
            {},
            {"Bucket": "b", "Tagging": {"TagSet": [{"Key": "gtbot:project", "Value": "m"}]}},
        )
        result = s3.ensure_bucket(client, "b", "eu-west-1", cors=True, tags={"gtbot:project": "m"})
        stub.assert_no_pending_responses()
    assert result == s3.BucketResult(
        "b", True, ("CORS rule set", "public access blocked", "tagged gtbot:project=m"), ()
    )


def test_a_bucket_already_right_is_left_alone_in_us_east_1() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("head_bucket", {}, {"Bucket": "b"})
        _settled(stub, "b", None, [{"AllowedMethods": ["PUT"], "AllowedOrigins": ["x"]}, GT_RULE])
        assert s3.ensure_bucket(client, "b", "us-east-1", cors=True) == s3.BucketResult(
            "b", False, (), ()
        )
        # In us-east-1 a bucket is created without a location (S3 refuses "us-east-1" there).
        stub.add_client_error("head_bucket", "NoSuchBucket", "none", 404)
        stub.add_response("create_bucket", {}, {"Bucket": "b"})
        _settled(stub, "b", None, None)
        assert s3.ensure_bucket(client, "b", "us-east-1", cors=False).created
        # Created by us a moment ago (a retry): carried on, not created again.
        stub.add_client_error("head_bucket", "NotFound", "none", 404)
        stub.add_client_error("create_bucket", "BucketAlreadyOwnedByYou", "yours", 409)
        _settled(stub, "b", "us-east-2", None)
        assert not s3.ensure_bucket(client, "b", "us-east-2", cors=False).created
        stub.assert_no_pending_responses()


def test_a_partly_blocked_bucket_is_blocked_and_more_cors_rules_are_kept() -> None:
    client = _client()
    theirs = {"AllowedMethods": ["PUT"], "AllowedOrigins": ["https://lab.example"]}
    with Stubber(client) as stub:
        stub.add_response("head_bucket", {}, {"Bucket": "b"})
        stub.add_response(
            "get_bucket_location", {"LocationConstraint": "us-east-2"}, {"Bucket": "b"}
        )
        stub.add_response("get_bucket_cors", {"CORSRules": [theirs]}, {"Bucket": "b"})
        stub.add_response(
            "put_bucket_cors",
            {},
            {"Bucket": "b", "CORSConfiguration": {"CORSRules": [theirs, GT_RULE]}},
        )
        partly = {**s3.BLOCK_ALL_PUBLIC, "RestrictPublicBuckets": False}
        stub.add_response(
            "get_public_access_block", {"PublicAccessBlockConfiguration": partly}, {"Bucket": "b"}
        )
        stub.add_response(
            "put_public_access_block",
            {},
            {"Bucket": "b", "PublicAccessBlockConfiguration": s3.BLOCK_ALL_PUBLIC},
        )
        stub.add_client_error("get_bucket_tagging", "AccessDenied", "no", 403)
        result = s3.ensure_bucket(client, "b", "us-east-2", cors=True, tags={"k": "v"})
        stub.assert_no_pending_responses()
    assert result.changes == ("CORS rule added beside the others", "public access blocked")
    assert result.warnings == (
        "not tagged for cost allocation (AccessDenied): gtbot needs s3:GetBucketTagging and "
        "s3:PutBucketTagging on it (`iam-policy <project>`)",
    )


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        (
            "head_bucket",
            "403",
            "Bucket b already exists and belongs to another AWS account (or your credentials may "
            "not read it). Bucket names are global: choose another name in project-config.yml.",
        ),
        (
            "head_bucket",
            "Forbidden",
            "Bucket b already exists and belongs to another AWS account (or your credentials may "
            "not read it). Bucket names are global: choose another name in project-config.yml.",
        ),
        (
            "head_bucket",
            "AccessDenied",
            "Bucket b already exists and belongs to another AWS account (or your credentials may "
            "not read it). Bucket names are global: choose another name in project-config.yml.",
        ),
        (
            "create_bucket",
            "BucketAlreadyExists",
            "Bucket b belongs to another AWS account. Bucket names are global: choose another "
            "name in project-config.yml.",
        ),
        ("head_bucket", "SlowDown", "Could not check bucket b: S3 asked to slow down even after "
         "retries. Wait a minute and try again."),
        ("create_bucket", "AccessDenied", f"Could not create bucket b in us-east-2: {DENIED}"),
        ("get_bucket_location", "AccessDenied",
         f"Could not read the region of bucket b: {DENIED}"),
        ("get_bucket_cors", "AccessDenied", f"Could not read the CORS rules of b: {DENIED}"),
        ("put_bucket_cors", "AccessDenied", f"Could not set the CORS rule on b: {DENIED}"),
        ("put_public_access_block", "AccessDenied",
         f"Could not block public access on b: {DENIED}"),
        ("get_public_access_block", "AccessDenied",
         f"Could not read the public access block of b: {DENIED}"),
    ],
)  # fmt: skip
def test_each_bucket_failure_word_for_word(call: str, code: str, message: str) -> None:
    # The calls of a new bucket in order; the one under test fails, the ones before succeed.
    calls = [
        ("head_bucket", None),
        ("create_bucket", {}),
        ("get_bucket_location", {"LocationConstraint": "us-east-2"}),
        ("get_bucket_cors", {"CORSRules": []}),
        ("put_bucket_cors", {}),
        ("get_public_access_block", {"PublicAccessBlockConfiguration": {}}),
        ("put_public_access_block", {}),
    ]
    client = _client()
    with Stubber(client) as stub:
        for name, response in calls:
            if name == call:
                stub.add_client_error(name, code, "no", 409 if name == "create_bucket" else 403)
                break
            if response is None:
                stub.add_client_error(name, "404", "Not Found", 404)
            else:
                stub.add_response(name, response)
        with pytest.raises(AwsError) as info:
            s3.ensure_bucket(client, "b", "us-east-2", cors=True)
    assert info.value.user_message == message


def test_bucket_regions_as_s3_reports_them() -> None:
    client = _client()
    with Stubber(client) as stub:
        for answer, region in (({}, "us-east-1"), ({"LocationConstraint": ""}, "us-east-1"),
                               ({"LocationConstraint": "EU"}, "eu-west-1"),
                               ({"LocationConstraint": "eu-west-2"}, "eu-west-2")):  # fmt: skip
            stub.add_response("get_bucket_location", answer, {"Bucket": "b"})
            assert s3.bucket_region(client, "b") == region


def test_answers_without_their_optional_lists_are_read_as_empty() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("head_bucket", {})
        stub.add_response("get_bucket_location", {"LocationConstraint": "us-east-2"})
        stub.add_response("get_bucket_cors", {})
        stub.add_response(
            "put_bucket_cors", {}, {"Bucket": "b", "CORSConfiguration": {"CORSRules": [GT_RULE]}}
        )
        stub.add_response("get_public_access_block", {})
        stub.add_response(
            "put_public_access_block",
            {},
            {"Bucket": "b", "PublicAccessBlockConfiguration": s3.BLOCK_ALL_PUBLIC},
        )
        assert s3.ensure_bucket(client, "b", "us-east-2", cors=True).changes == (
            "CORS rule set",
            "public access blocked",
        )
        # A bucket full of other rules names itself in the refusal.
        stub.add_response("head_bucket", {})
        stub.add_response("get_bucket_location", {"LocationConstraint": "us-east-2"})
        other = {"AllowedMethods": ["PUT"], "AllowedOrigins": ["https://lab.example"]}
        stub.add_response("get_bucket_cors", {"CORSRules": [other] * 100})
        with pytest.raises(AwsError, match="^Bucket lab-frames already has 100 CORS rules"):
            s3.ensure_bucket(client, "lab-frames", "us-east-2", cors=True)


def test_a_bucket_in_another_region_says_which_word_for_word() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("head_bucket", {})
        stub.add_response("get_bucket_location", {"LocationConstraint": "eu-west-2"})
        with pytest.raises(AwsError) as info:
            s3.ensure_bucket(client, "b", "us-east-2", cors=True)
    assert info.value.user_message == (
        "Bucket b exists in eu-west-2, but the project's region is us-east-2. Ground Truth needs "
        "its buckets in the job's region: set `region: eu-west-2` or use another bucket name."
    )


def test_a_bucket_with_fifty_tags_is_reported_not_tagged() -> None:
    client = _client()
    fifty = [{"Key": f"k{i}", "Value": "v"} for i in range(49)]
    with Stubber(client) as stub:
        stub.add_response("get_bucket_tagging", {"TagSet": fifty}, {"Bucket": "b"})
        stub.add_response(
            "put_bucket_tagging",
            {},
            {"Bucket": "b", "Tagging": {"TagSet": [*fifty, {"Key": "new", "Value": "1"}]}},
        )
        assert s3.ensure_bucket_tags(client, "b", {"new": "1", "k3": "other"}) == (
            "tagged new=1",
            None,
        )
        stub.add_response("get_bucket_tagging", {"TagSet": fifty}, {"Bucket": "b"})
        assert s3.ensure_bucket_tags(client, "b", {"a": "1", "b": "2"}) == (
            None,
            "not tagged: it has 49 tags, and S3 allows 50",
        )
        stub.add_response("get_bucket_tagging", {"TagSet": fifty}, {"Bucket": "b"})
        assert s3.ensure_bucket_tags(client, "b", {"k1": "x"}) == (None, None)
        stub.assert_no_pending_responses()
