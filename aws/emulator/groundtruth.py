"""A local Amazon SageMaker Ground Truth, reached by an unmodified boto3 client.

No public emulator implements labeling jobs (moto answers them with HTTP 500), yet every gtbot
flow after "submit" depends on them. This server speaks SageMaker's JSON protocol on loopback
(`AWS_ENDPOINT_URL_SAGEMAKER=<url>`), validates requests with botocore's own service model,
answers with the service's error codes, and runs a simulated workforce (workforce.py) that renders
each task from the job's worker template as Ground Truth does, loads frames from a local S3
through the rendered links, and writes Ground Truth's outputs back to it.

Faults are injectable while it runs (`EmulatorSettings`, or POST /_emulator/settings from another
process) so retries, throttling and slow-AWS behaviour are tested for real. State lives in memory.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aws.emulator.jobs import (
    ACCOUNT_ID,
    ENDED_STATUSES,
    JobStore,
    LabelingJob,
    Workteam,
    parse_s3_uri,
)
from aws.emulator.knobs import EmulatorSettings
from aws.emulator.shapes import (
    format_validation_message,
    operation_model,
    validation_errors,
    wire_to_python,
)
from aws.emulator.workforce import Workforce

__all__ = [
    "ACCOUNT_ID",
    "EmulatorSettings",
    "GroundTruthEmulator",
    "start_groundtruth_emulator",
    "update_remote_settings",
]

log = logging.getLogger(__name__)

SETTINGS_PATH = "/_emulator/settings"
DEFAULT_REGION = "us-east-1"
JOB_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/")
# Ground Truth's fixed public-crowd prices for custom (non built-in) task types, in USD.
PUBLIC_CROWD_PRICES_USD = frozenset(
    {"0.012", "0.024", "0.036", "0.048", "0.060", "0.072", "0.120", "0.240", "0.360", "0.480"}
    | {"0.600", "0.720", "0.840", "0.960", "1.080", "1.200"}
)


class ApiError(Exception):
    """An answer in the service's error form: `{"__type": code, "message": ...}`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def _paginate(items: list[Any], params: dict[str, Any]) -> tuple[list[Any], str | None]:
    """Offset tokens, opaque to the client like the service's own."""
    token = params.get("NextToken")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _validation(f"Invalid pagination token: {token}") from exc
        if start < 0 or start > len(items):
            raise _validation(f"Invalid pagination token: {token}")
    limit = int(params.get("MaxResults", 10))
    page = items[start : start + limit]
    end = start + len(page)
    next_token = None
    if end < len(items):
        next_token = base64.urlsafe_b64encode(f"offset:{end}".encode()).decode()
    return page, next_token


def _job_summary(job: LabelingJob) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "LabelingJobName": job.name,
        "LabelingJobArn": job.arn,
        "CreationTime": job.created,
        "LastModifiedTime": job.modified,
        "LabelingJobStatus": job.status,
        "LabelCounters": job.counters(),
        "WorkteamArn": job.workteam_arn,
        "InputConfig": job.request["InputConfig"],
    }
    config = job.human_task_config
    if "PreHumanTaskLambdaArn" in config:
        summary["PreHumanTaskLambdaArn"] = config["PreHumanTaskLambdaArn"]
    consolidation = config.get("AnnotationConsolidationConfig", {})
    if "AnnotationConsolidationLambdaArn" in consolidation:
        summary["AnnotationConsolidationLambdaArn"] = consolidation[
            "AnnotationConsolidationLambdaArn"
        ]
    if job.failure_reason:
        summary["FailureReason"] = job.failure_reason
    if job.output_dataset_uri:
        summary["LabelingJobOutput"] = {"OutputDatasetS3Uri": job.output_dataset_uri}
    return summary


def _job_description(job: LabelingJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "LabelingJobStatus": job.status,
        "LabelCounters": job.counters(),
        "CreationTime": job.created,
        "LastModifiedTime": job.modified,
        "JobReferenceCode": job.job_reference_code,
        "LabelingJobName": job.name,
        "LabelingJobArn": job.arn,
    }
    for key in (
        "LabelAttributeName",
        "InputConfig",
        "OutputConfig",
        "RoleArn",
        "LabelCategoryConfigS3Uri",
        "StoppingConditions",
        "LabelingJobAlgorithmsConfig",
        "HumanTaskConfig",
        "Tags",
    ):
        if key in job.request:
            body[key] = job.request[key]
    if job.failure_reason:
        body["FailureReason"] = job.failure_reason
    if job.output_dataset_uri:
        body["LabelingJobOutput"] = {"OutputDatasetS3Uri": job.output_dataset_uri}
    return body


@dataclass
class GroundTruthEmulator:
    """Handle of a running emulator: point boto3 at `url`; change `settings` at any time."""

    url: str
    settings: EmulatorSettings
    store: JobStore
    calls: list[str] = field(default_factory=list)
    _server: _Server | None = None
    _server_thread: threading.Thread | None = None
    _workforce: Workforce | None = None
    _fault_rng: random.Random = field(default_factory=random.Random)
    _fault_seed: int | None = None

    def stop(self) -> None:
        """Stop serving and stop the workforce; jobs and their state are discarded."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._server_thread is not None:
            self._server_thread.join(timeout=10)
        if self._workforce is not None:
            self._workforce.stop()

    def __enter__(self) -> GroundTruthEmulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_workteam(self, arn: str, description: str = "Workteam added to the emulator") -> None:
        """Make `arn` a known workteam in its region (e.g. the lab's real team ARN in a sandbox)."""
        self.store.add_workteam(arn, description)

    def add_lambda(self, arn: str, purpose: str) -> None:
        """Answer for `arn` as the recipe's `purpose` function ("pre-annotation" or
        "consolidation"), e.g. a lab's own deployment of the recipe in a sandbox."""
        self.store.add_lambda(arn, purpose)

    def job_names(self) -> list[str]:
        with self.store.lock:
            return [job.name for job in self.store.jobs.values()]

    # Request handling ------------------------------------------------------------------------

    def handle_sagemaker(
        self, target: str, body: bytes, authorization: str
    ) -> tuple[int, dict[str, Any]]:
        """One SageMaker call -> (HTTP status, JSON body); never raises."""
        operation = target.removeprefix("SageMaker.") if target.startswith("SageMaker.") else ""
        self.calls.append(operation or target)
        try:
            if self.settings.delay_seconds > 0:
                time.sleep(self.settings.delay_seconds)
            self._maybe_inject_fault()
            handler = self._handlers().get(operation)
            if handler is None:
                raise ApiError(
                    "UnknownOperationException",
                    f"The Ground Truth emulator does not implement {target or '(no X-Amz-Target)'}; "
                    f"it answers SageMaker.{', SageMaker.'.join(sorted(self._handlers()))}.",
                )
            try:
                params = json.loads(body or b"{}")
            except json.JSONDecodeError as exc:
                raise ApiError(
                    "SerializationException", f"Request body is not JSON: {exc}"
                ) from exc
            if not isinstance(params, dict):
                raise ApiError("SerializationException", "Request body must be a JSON object")
            match = _CREDENTIAL_SCOPE.search(authorization)
            region = match.group(1) if match else DEFAULT_REGION
            input_shape = operation_model(operation).input_shape
            python_params = wire_to_python(params, input_shape) if input_shape else params
            if input_shape is not None:
                errors = validation_errors(python_params, input_shape)
                if errors:
                    raise _validation(format_validation_message(errors))
            return 200, handler(region, params, python_params)
        except ApiError as exc:
            return exc.status, {"__type": exc.code, "message": exc.message}
        except Exception as exc:
            log.exception("Ground Truth emulator failed on %s", operation)
            return 500, {"__type": "InternalFailure", "message": f"{type(exc).__name__}: {exc}"}

    def _maybe_inject_fault(self) -> None:
        with self.store.lock:
            if self._fault_seed != self.settings.seed:
                self._fault_seed = self.settings.seed
                self._fault_rng.seed(f"faults:{self.settings.seed}")
            draw = self._fault_rng.random()
        throttle = self.settings.throttle_fraction
        if draw < throttle:
            raise ApiError("ThrottlingException", "Rate exceeded")
        if draw < throttle + self.settings.error_fraction:
            raise ApiError(
                "InternalFailure",
                "We encountered an internal error. Please try again. (injected by the emulator)",
                status=500,
            )

    def _handlers(
        self,
    ) -> dict[str, Callable[[str, dict[str, Any], dict[str, Any]], dict[str, Any]]]:
        return {
            "CreateLabelingJob": self._create_labeling_job,
            "DescribeLabelingJob": self._describe_labeling_job,
            "ListLabelingJobs": self._list_labeling_jobs,
            "StopLabelingJob": self._stop_labeling_job,
            "DescribeWorkteam": self._describe_workteam,
            "ListWorkteams": self._list_workteams,
        }

    def _workteam(self, region: str, arn: str) -> Workteam | None:
        return next((team for team in self.store.workteams(region) if team.arn == arn), None)

    def _create_labeling_job(
        self, region: str, params: dict[str, Any], _python: dict[str, Any]
    ) -> dict[str, Any]:
        name = params["LabelingJobName"]
        if not JOB_NAME_PATTERN.fullmatch(name):
            raise _validation(
                f"1 validation error detected: Value '{name}' at 'labelingJobName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
            )
        attribute = params["LabelAttributeName"]
        if attribute.endswith("-metadata") or attribute.endswith("-ref"):
            raise _validation(
                f"LabelAttributeName '{attribute}' must not end with '-metadata' or '-ref'."
            )
        s3_source = params["InputConfig"]["DataSource"].get("S3DataSource")
        if not s3_source:
            raise _validation(
                "The Ground Truth emulator supports only InputConfig.DataSource.S3DataSource "
                "(a manifest file), not streaming jobs."
            )
        for uri, what in (
            (s3_source["ManifestS3Uri"], "ManifestS3Uri"),
            (params["OutputConfig"]["S3OutputPath"], "S3OutputPath"),
        ):
            try:
                parse_s3_uri(uri)
            except ValueError as exc:
                raise _validation(f"{what} must be an s3://bucket/key URI, got '{uri}'.") from exc
        config = params["HumanTaskConfig"]
        ui = config["UiConfig"]
        if not ui.get("UiTemplateS3Uri") and not ui.get("HumanTaskUiArn"):
            raise _validation("UiConfig needs either UiTemplateS3Uri or HumanTaskUiArn.")
        arn = config["WorkteamArn"]
        team = self._workteam(region, arn)
        if team is None:
            raise _validation(
                f"Workteam {arn} does not exist in {region} for account {ACCOUNT_ID}. Known "
                f"workteams: {', '.join(t.arn for t in self.store.workteams(region))}."
            )
        if team.kind == "public-crowd":
            self._check_public_crowd(params)
        self._check_availability(team.kind, config)
        with self.store.lock:
            existing = self.store.find(region, name)
            if existing is not None:
                raise ApiError(
                    "ResourceInUse",
                    f"Job name must be unique within an AWS account and region, and a job with "
                    f"this name already exists ({existing.arn}).",
                )
            job = self.store.new_job(name, region, params, self.settings.seed)
            self.store.jobs[(region, name.lower())] = job
        return {"LabelingJobArn": job.arn}

    @staticmethod
    def _check_availability(kind: str, config: dict[str, Any]) -> None:
        """TaskAvailabilityLifetimeInSeconds (SageMaker API model, HumanTaskConfig): at most
        12 hours for the Amazon Mechanical Turk workforce; 30 days for private and vendor
        workforces ("for most users", i.e. without a raised limit)."""
        seconds = config.get("TaskAvailabilityLifetimeInSeconds")
        if seconds is None:
            return
        most = 43_200 if kind == "public-crowd" else 2_592_000
        if int(seconds) > most:
            raise _validation(
                f"TaskAvailabilityLifetimeInSeconds {seconds} exceeds the maximum of {most} "
                f"seconds for a {kind} workteam."
            )

    @staticmethod
    def _check_public_crowd(params: dict[str, Any]) -> None:
        classifiers = params["InputConfig"].get("DataAttributes", {}).get("ContentClassifiers", [])
        if "FreeOfPersonallyIdentifiableInformation" not in classifiers:
            raise _validation(
                "Public workforce jobs require InputConfig.DataAttributes.ContentClassifiers to "
                "include FreeOfPersonallyIdentifiableInformation."
            )
        price = params["HumanTaskConfig"].get("PublicWorkforceTaskPrice", {}).get("AmountInUsd")
        if not price:
            raise _validation(
                "Public workforce jobs require HumanTaskConfig.PublicWorkforceTaskPrice."
            )
        cents = int(price.get("Dollars", 0)) * 100 + int(price.get("Cents", 0))
        tenths = int(price.get("TenthFractionsOfACent", 0))
        amount = f"{cents // 100}.{cents % 100:02d}{tenths}"
        if amount not in PUBLIC_CROWD_PRICES_USD:
            raise _validation(
                f"PublicWorkforceTaskPrice USD {amount} is not offered for custom tasks; choose "
                f"one of {', '.join(sorted(PUBLIC_CROWD_PRICES_USD))}."
            )

    def _find_job(self, region: str, name: str) -> LabelingJob:
        job = self.store.find(region, name)
        if job is None:
            raise ApiError("ResourceNotFound", f"Could not find labeling job with name {name}")
        return job

    def _describe_labeling_job(
        self, region: str, params: dict[str, Any], _python: dict[str, Any]
    ) -> dict[str, Any]:
        with self.store.lock:
            return _job_description(self._find_job(region, params["LabelingJobName"]))

    def _stop_labeling_job(
        self, region: str, params: dict[str, Any], _python: dict[str, Any]
    ) -> dict[str, Any]:
        with self.store.lock:
            job = self._find_job(region, params["LabelingJobName"])
            if job.status in ENDED_STATUSES:
                raise _validation(
                    f"Labeling job {job.name} cannot be stopped because it is {job.status}."
                )
            if job.status != "Stopping":
                job.stop_requested_monotonic = time.monotonic()
                job.set_status("Stopping")
        return {}

    def _list_labeling_jobs(
        self, region: str, params: dict[str, Any], python: dict[str, Any]
    ) -> dict[str, Any]:
        def stamp(key: str) -> float | None:
            value = python.get(key)
            return value.timestamp() if isinstance(value, datetime) else None

        bounds = {
            key: stamp(key)
            for key in (
                "CreationTimeAfter",
                "CreationTimeBefore",
                "LastModifiedTimeAfter",
                "LastModifiedTimeBefore",
            )
        }
        needle = str(params.get("NameContains", "")).lower()
        status = params.get("StatusEquals")
        with self.store.lock:
            jobs = [job for job in self.store.jobs.values() if job.region == region]
            selected = [
                job
                for job in jobs
                if needle in job.name.lower()
                and (status is None or job.status == status)
                and _within(job.created, bounds["CreationTimeAfter"], bounds["CreationTimeBefore"])
                and _within(
                    job.modified, bounds["LastModifiedTimeAfter"], bounds["LastModifiedTimeBefore"]
                )
            ]
            sort_by = params.get("SortBy", "CreationTime")
            keys: dict[str, Callable[[LabelingJob], Any]] = {
                "Name": lambda job: (job.name.lower(), job.created),
                "CreationTime": lambda job: (job.created, job.name.lower()),
                "Status": lambda job: (job.status, job.created),
            }
            selected.sort(key=keys[sort_by], reverse=params.get("SortOrder") == "Descending")
            page, next_token = _paginate(selected, params)
            result: dict[str, Any] = {"LabelingJobSummaryList": [_job_summary(j) for j in page]}
        if next_token:
            result["NextToken"] = next_token
        return result

    def _describe_workteam(
        self, region: str, params: dict[str, Any], _python: dict[str, Any]
    ) -> dict[str, Any]:
        name = params["WorkteamName"]
        team = next((t for t in self.store.workteams(region) if t.name == name), None)
        if team is None:
            raise _validation(f"Workteam {name} does not exist in {region}.")
        return {"Workteam": team.describe()}

    def _list_workteams(
        self, region: str, params: dict[str, Any], _python: dict[str, Any]
    ) -> dict[str, Any]:
        needle = str(params.get("NameContains", "")).lower()
        teams = [t for t in self.store.workteams(region) if needle in t.name.lower()]
        if params.get("SortBy") == "Name":
            teams.sort(key=lambda t: t.name)
        else:
            teams.sort(key=lambda t: t.created)
        if params.get("SortOrder") == "Descending":
            teams.reverse()
        page, next_token = _paginate(teams, params)
        result: dict[str, Any] = {"Workteams": [team.describe() for team in page]}
        if next_token:
            result["NextToken"] = next_token
        return result

    def handle_settings(self, method: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """GET returns the settings; POST applies a JSON object of changes (all or nothing)."""
        if method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of setting: value")
                self.settings.update(changes)
            except ValueError as exc:
                return 400, {"__type": "ValidationException", "message": str(exc)}
        return 200, self.settings.as_dict()


def _within(value: float, after: float | None, before: float | None) -> bool:
    """Compared in whole milliseconds, so a timestamp the client got back from us round-trips."""
    ms = round(value * 1000)
    return (after is None or ms > round(after * 1000)) and (
        before is None or ms < round(before * 1000)
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: GroundTruthEmulator


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with Content-Length on every answer, so botocore's pooled connections stay up."""

    protocol_version = "HTTP/1.1"
    server_version = "gtbot-groundtruth-emulator"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the client's
    # delayed ACK adds ~40 ms to every call.
    disable_nagle_algorithm = True
    server: _Server

    @property
    def emulator(self) -> GroundTruthEmulator:
        return self.server.emulator

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: dict[str, Any], content_type: str) -> None:
        data = json.dumps(payload, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        body = self._body()
        path = self.path.split("?", 1)[0]
        if path == SETTINGS_PATH:
            status, payload = self.emulator.handle_settings("POST", body)
            self._send(status, payload, "application/json")
        elif path == "/":
            status, payload = self.emulator.handle_sagemaker(
                self.headers.get("X-Amz-Target", ""),
                body,
                self.headers.get("Authorization", ""),
            )
            self._send(status, payload, "application/x-amz-json-1.1")
        else:
            self._send(
                404, {"__type": "NotFound", "message": f"No route {path}"}, "application/json"
            )

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        path = self.path.split("?", 1)[0]
        if path == SETTINGS_PATH:
            status, payload = self.emulator.handle_settings("GET", b"")
            self._send(status, payload, "application/json")
        elif path == "/_emulator/health":
            self._send(200, {"status": "ok", "calls": len(self.emulator.calls)}, "application/json")
        else:
            self._send(
                404, {"__type": "NotFound", "message": f"No route {path}"}, "application/json"
            )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class signature)
        log.debug("groundtruth emulator: " + format, *args)


def start_groundtruth_emulator(
    s3_endpoint_url: str, settings: EmulatorSettings | None = None
) -> GroundTruthEmulator:
    """Serve on 127.0.0.1 on a port the OS picks, with the workforce running in the background."""
    settings = settings or EmulatorSettings()
    store = JobStore()
    server = _Server(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    emulator = GroundTruthEmulator(url=f"http://{host!s}:{port}", settings=settings, store=store)
    server.emulator = emulator
    workforce = Workforce(store, settings, s3_endpoint_url)
    emulator._server = server
    emulator._workforce = workforce
    emulator._server_thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="gt-emulator-http", daemon=True
    )
    emulator._server_thread.start()
    workforce.start()
    return emulator


def update_remote_settings(emulator_url: str, **changes: float | str) -> dict[str, Any]:
    """Change a running emulator's settings from another process (the sandbox, a benchmark)."""
    request = urllib.request.Request(
        f"{emulator_url.rstrip('/')}{SETTINGS_PATH}",
        data=json.dumps(changes).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        message = json.loads(exc.read() or b"{}").get("message", str(exc))
        raise ValueError(f"the emulator refused the settings: {message}") from exc
    return result
