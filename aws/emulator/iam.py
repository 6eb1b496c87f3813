"""IAM policy simulation on loopback, in front of moto's IAM.

moto answers SimulatePrincipalPolicy with HTTP 500 ("not implemented"), yet `doctor` rests on it.
This small server speaks IAM's query protocol: it evaluates SimulatePrincipalPolicy itself,
from the principal's identity policies as moto stores them, and passes every other call to moto
unchanged, so `AWS_ENDPOINT_URL_IAM=<url>` gives boto3 one IAM with both.

What the evaluation covers (IAM user guide, "Policy evaluation logic",
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html, and
"IAM JSON policy elements: Condition operators",
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html): Allow/Deny statements; Action/NotAction (case-insensitive, `*` and `?` wildcards);
Resource/NotResource (case-sensitive wildcards); the string, ARN, Bool and Null condition
operators with `IfExists`, against the request context the caller supplies (ContextEntries);
an explicit deny wins, then any allow, else an implicit deny. A condition key the context lacks
makes its condition false (unless `IfExists`) and is reported in MissingContextValues, as the
real simulator does. Not covered, and said so: resource-based policies, permissions boundaries,
SCPs, and the ForAnyValue/ForAllValues set operators (such a condition never matches).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

NAMESPACE = "https://iam.amazonaws.com/doc/2010-05-08/"
# moto is on loopback: a proxy from the environment must not stand in the way.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@cache
def _pattern(glob: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _matches(globs: Any, value: str, *, ignore_case: bool) -> bool:
    items = [globs] if isinstance(globs, str) else list(globs or [])
    return any(_pattern(str(g), ignore_case).match(value) for g in items)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value).lower() if isinstance(value, bool) else str(value)]


_OPERATORS = {
    "StringEquals": lambda want, got: got == want,
    "StringNotEquals": lambda want, got: got != want,
    "StringEqualsIgnoreCase": lambda want, got: got.lower() == want.lower(),
    "StringNotEqualsIgnoreCase": lambda want, got: got.lower() != want.lower(),
    "StringLike": lambda want, got: bool(_pattern(want, False).match(got)),
    "StringNotLike": lambda want, got: not _pattern(want, False).match(got),
    "ArnEquals": lambda want, got: got == want,
    "ArnNotEquals": lambda want, got: got != want,
    "ArnLike": lambda want, got: bool(_pattern(want, False).match(got)),
    "ArnNotLike": lambda want, got: not _pattern(want, False).match(got),
    "Bool": lambda want, got: got.lower() == want.lower(),
}
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals"}
_NEGATED |= {"ArnNotLike"}


@dataclass
class Evaluation:
    decision: str = "implicitDeny"
    matched: list[str] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)


def _conditions_hold(
    condition: Mapping[str, Any], context: Mapping[str, list[str]], missing: set[str]
) -> bool:
    for raw_operator, tests in condition.items():
        operator = str(raw_operator)
        if_exists = operator.endswith("IfExists")
        operator = operator.removesuffix("IfExists")
        if not isinstance(tests, dict):
            return False
        for key, wanted in tests.items():
            values = context.get(str(key).lower())
            if operator == "Null":
                is_null = values is None
                if not any(is_null == (w.lower() == "true") for w in _as_list(wanted)):
                    return False
                continue
            test = _OPERATORS.get(operator)
            if test is None:  # ForAnyValue:/ForAllValues: and numeric/date operators
                return False
            if values is None:
                if if_exists:
                    continue
                missing.add(str(key))
                return False
            wants = _as_list(wanted)
            if operator in _NEGATED:
                if not all(test(w, v) for w in wants for v in values):
                    return False
            elif not any(test(w, v) for w in wants for v in values):
                return False
    return True


def evaluate(
    documents: Sequence[tuple[str, Mapping[str, Any]]],
    action: str,
    resource: str,
    context: Mapping[str, list[str]],
) -> Evaluation:
    """The decision for one action on one resource under named identity policy documents."""
    result = Evaluation()
    allowed = False
    for source, document in documents:
        statements = document.get("Statement", [])
        for statement in [statements] if isinstance(statements, dict) else statements:
            if not isinstance(statement, dict):
                continue
            if "Action" in statement:
                if not _matches(statement["Action"], action, ignore_case=True):
                    continue
            elif not (
                "NotAction" in statement
                and not _matches(statement["NotAction"], action, ignore_case=True)
            ):
                continue
            if "Resource" in statement:
                if not _matches(statement["Resource"], resource, ignore_case=False):
                    continue
            elif not (
                "NotResource" in statement
                and not _matches(statement["NotResource"], resource, ignore_case=False)
            ):
                continue
            if not _conditions_hold(statement.get("Condition") or {}, context, result.missing):
                continue
            result.matched.append(source)
            if statement.get("Effect") == "Deny":
                result.decision = "explicitDeny"
                return result
            if statement.get("Effect") == "Allow":
                allowed = True
    if allowed:
        result.decision = "allowed"
    return result


class NoSuchEntity(Exception):
    pass


def _document(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = json.loads(urllib.parse.unquote(raw))
    return dict(raw)


def _paged(client: Any, operation: str, key: str, **params: Any) -> Iterator[Any]:
    for page in client.get_paginator(operation).paginate(**params):
        yield from page.get(key, [])


def principal_policies(iam: Any, arn: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, document) of every identity policy of a role or user (and the user's groups)."""
    match = re.match(r"^arn:aws[a-z\-]*:iam::\d{12}:(role|user)/(?:.*/)?([\w+=,.@-]+)$", arn)
    if match is None:
        raise NoSuchEntity(f"{arn} is not the ARN of an IAM role or user")
    kind, name = match.groups()
    documents: list[tuple[str, dict[str, Any]]] = []

    def attached(operation: str, **params: Any) -> None:
        for policy in _paged(iam, operation, "AttachedPolicies", **params):
            meta = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]
            version = iam.get_policy_version(
                PolicyArn=policy["PolicyArn"], VersionId=meta["DefaultVersionId"]
            )["PolicyVersion"]
            documents.append((policy["PolicyArn"], _document(version["Document"])))

    try:
        if kind == "role":
            iam.get_role(RoleName=name)
            attached("list_attached_role_policies", RoleName=name)
            for policy in _paged(iam, "list_role_policies", "PolicyNames", RoleName=name):
                doc = iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
                documents.append((f"{arn} inline {policy}", _document(doc)))
        else:
            iam.get_user(UserName=name)
            attached("list_attached_user_policies", UserName=name)
            for policy in _paged(iam, "list_user_policies", "PolicyNames", UserName=name):
                doc = iam.get_user_policy(UserName=name, PolicyName=policy)["PolicyDocument"]
                documents.append((f"{arn} inline {policy}", _document(doc)))
            for group in _paged(iam, "list_groups_for_user", "Groups", UserName=name):
                group_name = group["GroupName"]
                attached("list_attached_group_policies", GroupName=group_name)
                for policy in _paged(
                    iam, "list_group_policies", "PolicyNames", GroupName=group_name
                ):
                    doc = iam.get_group_policy(GroupName=group_name, PolicyName=policy)
                    documents.append(
                        (f"group {group_name} {policy}", _document(doc["PolicyDocument"]))
                    )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
            raise NoSuchEntity(f"The {kind} with name {name} cannot be found.") from None
        raise
    return documents


def _members(params: Mapping[str, list[str]], prefix: str) -> list[str]:
    found = []
    index = 1
    while f"{prefix}.member.{index}" in params:
        found.append(params[f"{prefix}.member.{index}"][0])
        index += 1
    return found


def _context(params: Mapping[str, list[str]]) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {}
    index = 1
    while f"ContextEntries.member.{index}.ContextKeyName" in params:
        name = params[f"ContextEntries.member.{index}.ContextKeyName"][0]
        context[name.lower()] = _members(params, f"ContextEntries.member.{index}.ContextKeyValues")
        index += 1
    return context


def simulate_principal_policy(iam: Any, params: Mapping[str, list[str]]) -> str:
    """The XML body of a SimulatePrincipalPolicy answer (raises NoSuchEntity)."""
    source = params.get("PolicySourceArn", [""])[0]
    documents = principal_policies(iam, source)
    for index, text in enumerate(_members(params, "PolicyInputList"), start=1):
        documents.append((f"PolicyInputList.{index}", json.loads(text)))
    context = _context(params)
    resources = _members(params, "ResourceArns") or ["*"]
    results = []
    for action in _members(params, "ActionNames"):
        for resource in resources:
            found = evaluate(documents, action, resource, context)
            matched = "".join(
                f"<member><SourcePolicyId>{escape(name)}</SourcePolicyId></member>"
                for name in found.matched
            )
            missing = "".join(f"<member>{escape(k)}</member>" for k in sorted(found.missing))
            results.append(
                "<member>"
                f"<EvalActionName>{escape(action)}</EvalActionName>"
                f"<EvalResourceName>{escape(resource)}</EvalResourceName>"
                f"<EvalDecision>{found.decision}</EvalDecision>"
                f"<MatchedStatements>{matched}</MatchedStatements>"
                f"<MissingContextValues>{missing}</MissingContextValues>"
                "</member>"
            )
    return (
        f'<SimulatePrincipalPolicyResponse xmlns="{NAMESPACE}"><SimulatePrincipalPolicyResult>'
        f"<IsTruncated>false</IsTruncated><EvaluationResults>{''.join(results)}"
        "</EvaluationResults></SimulatePrincipalPolicyResult>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        "</SimulatePrincipalPolicyResponse>"
    )


def _error(code: str, message: str) -> str:
    return (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId>"
        "</ErrorResponse>"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    moto_url: str
    iam: Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        request = urllib.request.Request(
            self.server.moto_url + self.path,
            data=body or None,
            headers=headers,
            method=self.command,
        )
        try:
            with _DIRECT.open(request, timeout=30) as response:
                status, data = response.status, response.read()
                content_type = response.headers.get("Content-Type", "text/xml")
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
            content_type = exc.headers.get("Content-Type", "text/xml")
        self._reply(status, data, content_type)

    def do_POST(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if params.get("Action", [""])[0] != "SimulatePrincipalPolicy":
            self._forward(body)
            return
        try:
            xml = simulate_principal_policy(self.server.iam, params)
        except NoSuchEntity as exc:
            self._reply(404, _error("NoSuchEntity", str(exc)).encode(), "text/xml")
            return
        except Exception as exc:  # an emulator bug must answer, not hang the client
            log.exception("IAM policy simulation failed")
            self._reply(500, _error("ServiceFailure", str(exc)).encode(), "text/xml")
            return
        self._reply(200, xml.encode(), "text/xml")

    def do_GET(self) -> None:  # noqa: N802
        self._forward(b"")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("iam emulator: " + format, *args)


@dataclass
class IamEmulator:
    url: str
    _server: _Server
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def start_iam_emulator(moto_url: str) -> IamEmulator:
    """Serve on 127.0.0.1 on a port the OS picks, in front of moto's IAM at `moto_url`."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.moto_url = moto_url.rstrip("/")
    server.iam = boto3.session.Session().client(
        "iam",
        endpoint_url=server.moto_url,
        region_name="us-east-1",
        aws_access_key_id="emulator",
        aws_secret_access_key="emulator",
    )
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="iam-emulator", daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    return IamEmulator(url=f"http://{host!s}:{port}", _server=server, _thread=thread)
