"""The simulated workforce: reads each job's manifest and template from S3, shows every task to
its workers as Ground Truth would, and writes what Ground Truth writes, where it writes it.

A task is the job's worker task template rendered with Liquid for one data object
(aws/worker_task.py): `task.input` is the manifest line, or what the job's pre-annotation Lambda
returns for it (aws/emulator/lambdas.py). A worker sees only the rendered page: the image is
whatever its `<crowd-keypoint src>` links to, fetched over HTTP through that link (a presigned
URL on the emulated S3), and the labels are those of its `labels` attribute. A page whose image
does not load or whose element has no labels cannot be answered, and the object fails with a
reason in the output manifest, as on the service.

Workers aim at each frame's true keypoints, which travel inside the frame as a JPEG comment
(`gtbot-truth:` + JSON, see bot/synthetic.py). They are imperfect on purpose, as noisy as the
public crowd by default (settings.PROFILES): per-worker click scatter, left/right swaps of paired
keypoints, skipped keypoints and wild clicks, so that consensus and flip correction downstream
have real work to do. Labels the truth does not know get random positions.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image, UnidentifiedImageError

from aws.emulator.jobs import DataObject, JobStore, LabelingJob, parse_s3_uri
from aws.emulator.knobs import EmulatorSettings
from aws.emulator.lambdas import CONSOLIDATION, PRE_ANNOTATION
from aws.worker_task import (
    KeypointTask,
    WorkerTemplateError,
    WorkerTemplates,
    human_annotation_required,
    keypoint_task,
)

log = logging.getLogger(__name__)

TRUTH_PREFIX = "gtbot-truth:"
TICK_SECONDS = 0.02
WORKERS_PER_TEAM = 12
MAX_TASKS_PER_TICK = 500
# "Input Data Quotas" (https://docs.aws.amazon.com/sagemaker/latest/dg/input-data-limits.html):
# 100,000 items per labeling job other than semantic segmentation.
MAX_DATA_OBJECTS = 100_000
# "The JSON line objects in your manifest can be up to 100 kilobytes in size" (Lambda
# requirements page, sms-custom-templates-step3-lambda-requirements).
MAX_LINE_BYTES = 100_000
# How long a link made by `grant_read_access` lives ("a short-lived access token").
GRANT_SECONDS = 3600
MAX_IMAGE_BYTES = 50 * 1024 * 1024
# The emulated S3 is on loopback: a proxy from the environment must not stand in the way.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class JobFailed(Exception):
    """Ends a job with `FailureReason` = the message, as the service does for client errors."""


@dataclass(frozen=True)
class SimulatedWorker:
    """A worker's habits, as multipliers of the live settings so runtime changes still apply."""

    worker_id: str
    cognito_sub: str | None
    noise_factor: float
    swap_factor: float
    miss_factor: float
    outlier_factor: float
    median_seconds: float


def make_team(seed: int, workteam_arn: str, size: int = WORKERS_PER_TEAM) -> list[SimulatedWorker]:
    """The same team always has the same people, so per-worker quality can be measured."""
    rng = random.Random(f"team:{seed}:{workteam_arn}")
    parts = workteam_arn.split(":")
    region = parts[3] if len(parts) > 3 else "us-east-1"
    kind = "public" if "/public-crowd/" in workteam_arn else "private"
    if "/vendor-crowd/" in workteam_arn:
        kind = "vendor"
    workers = []
    for _ in range(size):
        sub = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if kind == "private" else None
        workers.append(
            SimulatedWorker(
                worker_id=f"{kind}.{region}.{rng.getrandbits(64):016x}",
                cognito_sub=sub,
                noise_factor=rng.uniform(0.5, 1.6),
                swap_factor=rng.uniform(0.3, 2.0),
                miss_factor=rng.uniform(0.3, 2.0),
                outlier_factor=rng.uniform(0.3, 2.0),
                median_seconds=rng.uniform(20.0, 90.0),
            )
        )
    return workers


@dataclass(frozen=True)
class FrameTruth:
    """What a synthetic frame carries about itself: where each label truly is, its left/right
    pairs, and how hard the frame is (hidden keypoints, huddled animals)."""

    points: dict[str, tuple[float, float]]
    pairs: list[tuple[str, str]]
    occluded: frozenset[str] = frozenset()
    animals: tuple[tuple[str, ...], ...] = ()
    huddled: bool = False


def parse_frame_truth(comment: bytes | str | None) -> FrameTruth | None:
    """The truth a synthetic frame carries, or None when the frame has none (or a broken one)."""
    if comment is None:
        return None
    text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
    if not text.startswith(TRUTH_PREFIX):
        return None
    try:
        data = json.loads(text[len(TRUTH_PREFIX) :])
        points = {
            str(item["label"]): (float(item["x"]), float(item["y"])) for item in data["keypoints"]
        }
        pairs = [(str(a), str(b)) for a, b in data.get("pairs", [])]
        occluded = frozenset(
            str(item["label"]) for item in data["keypoints"] if item.get("occluded") is True
        )
        animals = tuple(tuple(str(label) for label in group) for group in data.get("animals", []))
        huddled = data.get("huddled") is True
    except (ValueError, KeyError, TypeError):
        return None
    return FrameTruth(points, pairs, occluded, animals, huddled)


def parse_truth(
    comment: bytes | str | None,
) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str]]] | None:
    """The points and left/right pairs a synthetic frame carries, or None."""
    found = parse_frame_truth(comment)
    return None if found is None else (found.points, found.pairs)


def _iso_ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# How much harder a hard frame is, at `settings.difficulty` 1 (0 makes every frame alike).
# A keypoint another animal hides can only be guessed: three times the scatter, two and a half
# times the wild clicks. Huddled animals: left and right are confused two and a half times as
# often, every click scatters 30 % more, and a worker may take one animal for the other
# (`settings.identity_fraction`, scaled by the worker's habit of swapping).
OCCLUDED_NOISE = 2.0
OCCLUDED_OUTLIERS = 1.5
HUDDLED_SWAPS = 1.5
HUDDLED_NOISE = 0.3


def answer_keypoints(
    worker: SimulatedWorker,
    obj: DataObject,
    labels: list[str],
    settings: EmulatorSettings,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """One worker's clicks for one frame: truth plus this worker's kinds of mistakes, more of
    them where the frame is hard (see the constants above)."""
    truth = dict(obj.truth or {})
    huddle = settings.difficulty if obj.huddled else 0.0
    animals = obj.truth_animals
    if (
        huddle
        and len(animals) > 1
        and rng.random() < min(1.0, settings.identity_fraction * huddle * worker.swap_factor)
    ):
        first, second = rng.sample(range(len(animals)), 2)
        for a, b in zip(animals[first], animals[second], strict=False):
            if a in truth and b in truth:
                truth[a], truth[b] = truth[b], truth[a]
    swap = settings.swap_fraction * worker.swap_factor * (1.0 + HUDDLED_SWAPS * huddle)
    for left, right in obj.truth_pairs:
        if left in truth and right in truth and rng.random() < min(1.0, swap):
            truth[left], truth[right] = truth[right], truth[left]
    width, height = max(obj.width, 1), max(obj.height, 1)
    scatter = settings.noise_px if settings.noise_px > 0 else settings.noise_fraction * width
    sigma = scatter * worker.noise_factor * (1.0 + HUDDLED_NOISE * huddle)
    outlier = settings.outlier_fraction * worker.outlier_factor
    points = []
    for label in labels:
        if rng.random() < min(1.0, settings.miss_fraction * worker.miss_factor):
            continue
        hidden = settings.difficulty if label in obj.truth_occluded else 0.0
        if label not in truth:
            x, y = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
        elif rng.random() < min(1.0, outlier * (1.0 + OCCLUDED_OUTLIERS * hidden)):
            tx, ty = truth[label]
            distance = rng.uniform(0.045, 0.1) * width
            angle = rng.uniform(0.0, 2 * math.pi)
            x = tx + distance * math.cos(angle)
            y = ty + distance * math.sin(angle)
        else:
            tx, ty = truth[label]
            spread = sigma * (1.0 + OCCLUDED_NOISE * hidden)
            x, y = rng.gauss(tx, spread), rng.gauss(ty, spread)
        x = min(max(x, 0.0), width - 1.0)
        y = min(max(y, 0.0), height - 1.0)
        points.append({"label": label, "x": round(x, 1), "y": round(y, 1)})
    return points


class Workforce:
    """One background thread that plays every worker: a token bucket filled at `settings.rate`."""

    def __init__(self, store: JobStore, settings: EmulatorSettings, s3_endpoint_url: str) -> None:
        self._store = store
        self._settings = settings
        session = boto3.session.Session()
        credentials: dict[str, str] = {}
        if session.get_credentials() is None:
            # The endpoint is a local S3 emulator, which accepts any key.
            credentials = {"aws_access_key_id": "emulator", "aws_secret_access_key": "emulator"}
        self._s3 = session.client(
            "s3",
            # Empty means boto3's own lookup, i.e. AWS_ENDPOINT_URL_S3.
            endpoint_url=s3_endpoint_url or None,
            region_name="us-east-1",
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
            **credentials,
        )
        self._templates = WorkerTemplates(self._grant_read_access)
        self._teams: dict[tuple[int, str], list[SimulatedWorker]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gt-emulator-workforce", daemon=True)
        self._round_robin = 0

    def start(self) -> None:
        self._thread.start()

    def _grant_read_access(self, bucket: str, key: str) -> str:
        """The link `grant_read_access` makes: a presigned GET on the emulated S3."""
        url: str = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=GRANT_SECONDS
        )
        return url

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    # The loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        tokens = 0.0
        last = time.monotonic()
        while not self._stop.wait(TICK_SECONDS):
            now = time.monotonic()
            rate = max(0.0, self._settings.rate)
            # A rate of 0 is nobody working: a token left from before must not label one more
            # task whenever a job next starts (tests that stall a job depend on it).
            tokens = min(tokens + rate * (now - last), max(1.0, rate)) if rate > 0 else 0.0
            last = now
            try:
                self._advance_lifecycles(now)
                tokens = self._work(tokens)
                self._flush_and_finish()
            except Exception:  # a bug in the emulator must not silently stop every job
                log.exception("Ground Truth emulator workforce tick failed")

    def _guarded(self, job: LabelingJob, step: Any, *args: Any) -> Any:
        """Run one job step; a JobFailed or an unexpected error fails that job, not the others."""
        try:
            return step(job, *args)
        except JobFailed as exc:
            with self._store.lock:
                if job.status in ("Initializing", "InProgress", "Stopping"):
                    job.set_status("Failed", str(exc))
        except Exception as exc:
            log.exception("emulated labeling job %s failed unexpectedly", job.name)
            with self._store.lock:
                if job.status in ("Initializing", "InProgress", "Stopping"):
                    job.set_status("Failed", f"InternalServerError: {type(exc).__name__}: {exc}")
        return None

    def _advance_lifecycles(self, now: float) -> None:
        for job in self._store.active():
            if job.status == "Initializing":
                if now - job.started_monotonic >= self._settings.initializing_seconds:
                    self._guarded(job, self._initialize)
            elif job.status == "Stopping":
                requested = job.stop_requested_monotonic or now
                if now - requested >= self._settings.stopping_seconds:
                    self._guarded(job, self._finish_stop)

    def _work(self, tokens: float) -> float:
        done = 0
        while tokens >= 1.0 and done < MAX_TASKS_PER_TICK and not self._stop.is_set():
            jobs = [job for job in self._store.active() if job.status == "InProgress"]
            if not jobs:
                return min(tokens, 1.0)
            progressed = False
            for offset in range(len(jobs)):
                job = jobs[(self._round_robin + offset) % len(jobs)]
                if self._guarded(job, self._one_task):
                    self._round_robin = (self._round_robin + offset + 1) % max(len(jobs), 1)
                    progressed = True
                    break
            if not progressed:
                return min(tokens, 1.0)
            tokens -= 1.0
            done += 1
        return tokens

    def _flush_and_finish(self) -> None:
        for job in self._store.active():
            if job.status != "InProgress":
                continue
            self._guarded(job, self._flush_or_complete)

    # Job steps ------------------------------------------------------------------------------

    def _read_s3(self, uri: str, what: str) -> bytes:
        try:
            bucket, key = parse_s3_uri(uri)
        except ValueError as exc:
            raise JobFailed(f"ClientError: The {what} {uri} is not an s3:// URI.") from exc
        try:
            body: bytes = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            raise JobFailed(
                f"ClientError: Failed to read the {what} {uri} ({code}). Check that the object "
                "exists and that the job's role can read it."
            ) from exc
        except BotoCoreError as exc:
            raise JobFailed(f"ClientError: Failed to read the {what} {uri}: {exc}") from exc
        return body

    def _initialize(self, job: LabelingJob) -> None:
        manifest_uri = job.request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
        text = self._read_s3(manifest_uri, "input manifest")
        objects = _parse_manifest(text, manifest_uri)
        out_bucket, _ = parse_s3_uri(job.output_prefix)
        try:
            self._s3.head_bucket(Bucket=out_bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            raise JobFailed(
                f"ClientError: The output location {job.request['OutputConfig']['S3OutputPath']} "
                f"is not accessible ({code}). Create the bucket or fix S3OutputPath."
            ) from exc
        self._check_lambda(job.pre_lambda_arn, PRE_ANNOTATION)
        self._check_lambda(job.consolidation_lambda_arn, CONSOLIDATION)
        template = self._load_template(job)
        with self._store.lock:
            if job.status != "Initializing":
                return
            job.objects = objects
            job.pending.extend(obj.index for obj in objects)
            job.template = template
            job.set_status("InProgress")

    def _check_lambda(self, arn: str | None, purpose: str) -> None:
        if arn is None:
            return
        function = self._store.lambda_function(arn)
        if function is None:
            raise JobFailed(
                f"ClientError: Could not invoke the {purpose} Lambda {arn} "
                "(ResourceNotFoundException: Function not found). Check the ARN, its region, "
                "and that the job's role may invoke it."
            )
        if function.purpose != purpose:
            raise JobFailed(
                f"ClientError: The {purpose} Lambda {arn} is a {function.purpose} function; "
                "its answers are not what Ground Truth expects here."
            )

    def _load_template(self, job: LabelingJob) -> Any:
        """The worker task template, parsed as Liquid once per job; the job fails without one,
        as every task is made from it."""
        uri = job.human_task_config["UiConfig"].get("UiTemplateS3Uri")
        if not uri:
            raise JobFailed(
                "ClientError: The emulator renders custom worker task templates named by "
                "HumanTaskConfig.UiConfig.UiTemplateS3Uri; HumanTaskUiArn is not emulated."
            )
        raw = self._read_s3(uri, "worker task template")
        try:
            return self._templates.parse(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise JobFailed(
                f"ClientError: The worker task template {uri} is not UTF-8 text."
            ) from None
        except WorkerTemplateError as exc:
            raise JobFailed(f"ClientError: Invalid worker task template {uri}: {exc}.") from None

    def _task_input(self, job: LabelingJob, obj: DataObject) -> dict[str, Any] | None:
        """`task.input`: the pre-annotation Lambda's `taskInput`, else the manifest line."""
        arn = job.pre_lambda_arn
        if arn is None:
            return dict(obj.line)
        function = self._store.lambda_function(arn)
        assert function is not None and function.handler is not None  # checked at start
        event = {"version": "2018-10-16", "labelingJobArn": job.arn, "dataObject": obj.line}
        response = function.handler(event)
        task_input = response.get("taskInput")
        if not human_annotation_required(response):
            obj.failure = (
                f"ClientError: The pre-annotation Lambda {arn} did not send {obj.source_ref} to "
                "workers (humanAnnotationRequired is false)."
            )
            return None
        if not isinstance(task_input, dict):
            obj.failure = (
                f"ClientError: The pre-annotation Lambda {arn} returned no taskInput object "
                f"for {obj.source_ref}."
            )
            return None
        return task_input

    def _show_task(self, job: LabelingJob, obj: DataObject) -> KeypointTask | None:
        """Render the page one worker gets and load its image; None (and `obj.failure`) when
        the worker cannot do the task."""
        if obj.task_input is None:
            obj.task_input = self._task_input(job, obj)
            if obj.task_input is None:
                return None
        try:
            page = self._templates.render(job.template, obj.task_input)
            task = keypoint_task(page)
        except (WorkerTemplateError, ValueError) as exc:
            obj.failure = (
                f"ClientError: The worker task for {obj.source_ref} cannot be done: {exc}."
            )
            return None
        image = self._fetch(task.src, obj)
        if image is None:
            return None
        if not obj.loaded:
            try:
                with Image.open(io.BytesIO(image)) as picture:
                    obj.width, obj.height = picture.size
                    found = parse_frame_truth(picture.info.get("comment"))
            except (UnidentifiedImageError, OSError, ValueError):
                obj.failure = (
                    f"ClientError: The data object {obj.source_ref} is not an image workers "
                    "can see."
                )
                return None
            obj.loaded = True
            if found is not None:
                obj.truth, obj.truth_pairs = found.points, found.pairs
                obj.truth_occluded, obj.truth_animals = found.occluded, found.animals
                obj.huddled = found.huddled
        return task

    def _fetch(self, src: str, obj: DataObject) -> bytes | None:
        """What a worker's browser does with `<crowd-keypoint src>`: GET it, nothing else."""
        if not src:
            obj.failure = (
                f"ClientError: Workers could not see {obj.source_ref}: the task's image link "
                "rendered empty. The template's image expression names nothing in task.input "
                "(without a pre-annotation Lambda task.input is the manifest line, so "
                "task.input.source-ref; with the recipe's Lambda, task.input.taskObject)."
            )
            return None
        if not src.startswith(("http://", "https://")):
            obj.failure = (
                f"ClientError: Workers could not see {obj.source_ref}: the task's image link "
                f"{src[:120]!r} is not an http(s) URL (an S3 URI needs grant_read_access)."
            )
            return None
        try:
            with _DIRECT.open(src, timeout=10) as response:
                body: bytes = response.read(MAX_IMAGE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            obj.failure = (
                f"ClientError: Workers could not load the image of {obj.source_ref} through the "
                f"task's link (HTTP {exc.code}). Check that the object exists and that the "
                "job's role can read it."
            )
            return None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            obj.failure = (
                f"ClientError: Workers could not load the image of {obj.source_ref} through the "
                f"task's link ({exc})."
            )
            return None
        if len(body) > MAX_IMAGE_BYTES:
            obj.failure = f"ClientError: The image of {obj.source_ref} is larger than 50 MB."
            return None
        return body

    def _one_task(self, job: LabelingJob) -> bool:
        """One worker takes one object's task; False when the job has nothing to hand out."""
        with self._store.lock:
            if job.status != "InProgress":
                return False
            while job.pending and len(job.in_flight) < job.max_concurrent_objects:
                job.in_flight.append(job.pending.popleft())
            if not job.in_flight:
                return False
            # Workers favour the oldest tasks, so objects finish steadily rather than all at once.
            position = min(int(job.rng.expovariate(0.5)), len(job.in_flight) - 1)
            obj = job.objects[job.in_flight[position]]
        task = self._show_task(job, obj)
        if task is None:
            self._fail_object(job, obj)
            return True
        team = self._team(job.workteam_arn)
        candidates = [worker for worker in team if worker.worker_id not in obj.workers_used]
        worker = job.rng.choice(candidates)
        obj.workers_used.add(worker.worker_id)
        obj.answers.append(self._answer(job, obj, worker, task))
        if len(obj.answers) >= job.workers_per_object:
            line = self._complete_object(job, obj)
            with self._store.lock:
                if job.status == "InProgress" and obj.index in job.in_flight:
                    job.in_flight.remove(obj.index)
                    job.labeled[obj.index] = line
                    job.manifest_dirty = True
                    job.touch()
        return True

    def _fail_object(self, job: LabelingJob, obj: DataObject) -> None:
        """The object is not labeled; its line in the output manifest says why (the key the
        results reader looks for: `<label attribute>-metadata.failure-reason`)."""
        line = dict(obj.line)
        line[f"{job.label_attribute}-metadata"] = {
            "type": "groundtruth/custom",
            "job-name": job.name,
            "creation-date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
            "failure-reason": obj.failure or "ClientError: The data object could not be labeled.",
        }
        with self._store.lock:
            if obj.index in job.in_flight:
                job.in_flight.remove(obj.index)
                job.failed[obj.index] = line
                job.manifest_dirty = True
                job.touch()

    def _team(self, workteam_arn: str) -> list[SimulatedWorker]:
        key = (self._settings.seed, workteam_arn)
        if key not in self._teams:
            self._teams[key] = make_team(*key)
        return self._teams[key]

    def _answer(
        self, job: LabelingJob, obj: DataObject, worker: SimulatedWorker, task: KeypointTask
    ) -> dict[str, Any]:
        submitted = datetime.now(UTC)
        spent = round(worker.median_seconds * job.rng.lognormvariate(0.0, 0.35), 3)
        accepted = datetime.fromtimestamp(submitted.timestamp() - spent - 1.0, tz=UTC)
        answer: dict[str, Any] = {
            "acceptanceTime": _iso_ms(accepted),
            "submissionTime": _iso_ms(submitted),
            "timeSpentInSeconds": spent,
            "workerId": worker.worker_id,
        }
        if worker.cognito_sub is not None:
            answer["workerMetadata"] = {
                "identityData": {
                    "identityProviderType": "Cognito",
                    "issuer": f"https://cognito-idp.{job.region}.amazonaws.com/{job.region}_emulator",
                    "sub": worker.cognito_sub,
                }
            }
        labels = list(task.labels)
        answer["answerContent"] = {
            task.name: {
                "inputImageProperties": {"height": obj.height, "width": obj.width},
                "keypoints": answer_keypoints(worker, obj, labels, self._settings, job.rng),
            }
        }
        return answer

    def _put(self, uri: str, body: bytes, content_type: str) -> None:
        bucket, key = parse_s3_uri(uri)
        try:
            self._s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise JobFailed(
                f"ClientError: Unable to write {uri}: {exc}. Check the output bucket and the "
                "job's role."
            ) from exc

    def _complete_object(self, job: LabelingJob, obj: DataObject) -> dict[str, Any]:
        """Write the worker-response file and build the output manifest line for `obj`."""
        finished = datetime.now(UTC)
        response_uri = (
            f"{job.output_prefix}/annotations/worker-response/iteration-1/{obj.index}/"
            f"{finished.strftime('%Y-%m-%d_%H:%M:%S')}.json"
        )
        body = json.dumps({"answers": obj.answers}, indent=1).encode()
        self._put(response_uri, body, "application/json")
        attribute = job.label_attribute
        metadata: dict[str, Any] = {
            "type": "groundtruth/custom",
            "job-name": job.name,
            "human-annotated": "yes",
            "creation-date": finished.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        }
        line = dict(obj.line)
        if job.consolidates:
            line[attribute] = {
                "annotationsFromAllWorkers": [
                    {
                        "workerId": answer["workerId"],
                        "annotationData": {"content": json.dumps(answer["answerContent"])},
                    }
                    for answer in obj.answers
                ]
            }
        else:
            line[attribute] = {}
            metadata["worker-response-ref"] = response_uri
        line[f"{attribute}-metadata"] = metadata
        return line

    def _write_manifest(self, job: LabelingJob) -> bool:
        with self._store.lock:
            done = job.labeled | job.failed
            lines = [done[index] for index in sorted(done)]
            job.manifest_dirty = False
        if not lines:
            return False
        text = "".join(json.dumps(line) + "\n" for line in lines)
        self._put(job.output_manifest_uri, text.encode(), "application/jsonlines")
        return True

    def _flush_or_complete(self, job: LabelingJob) -> None:
        with self._store.lock:
            finished = not job.pending and not job.in_flight
            dirty = job.manifest_dirty
        if not finished:
            if dirty:
                self._write_manifest(job)
            return
        if not job.labeled:
            first = next((obj.failure for obj in job.objects if obj.failure), None)
            raise JobFailed(
                f"ClientError: None of the {len(job.objects)} data objects could be labeled. "
                f"First reason: {first or 'unknown'}"
            )
        self._write_manifest(job)
        with self._store.lock:
            if job.status == "InProgress":
                job.output_dataset_uri = job.output_manifest_uri
                job.set_status("Completed")

    def _finish_stop(self, job: LabelingJob) -> None:
        """Answers for unfinished objects are dropped; labeled ones stay in the manifest."""
        written = self._write_manifest(job) if job.labeled or job.failed else False
        with self._store.lock:
            if job.status == "Stopping":
                if written:
                    job.output_dataset_uri = job.output_manifest_uri
                job.set_status("Stopped")


def _parse_manifest(data: bytes, uri: str) -> list[DataObject]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobFailed(f"ClientError: The input manifest {uri} is not UTF-8 text.") from exc
    lines = text.splitlines()
    if sum(1 for raw in lines if raw.strip()) > MAX_DATA_OBJECTS:
        raise JobFailed(
            f"ClientError: The input manifest {uri} has more than {MAX_DATA_OBJECTS:,} data "
            "objects, the dataset size quota of a labeling job. Split it into several jobs."
        )
    objects: list[DataObject] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if len(raw.encode("utf-8")) > MAX_LINE_BYTES:
            raise JobFailed(
                f"ClientError: Invalid input manifest {uri}: line {number} is larger than "
                "100 KB, the most a data object may be."
            )
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise JobFailed(
                f"ClientError: Invalid input manifest {uri}: line {number} is not valid JSON "
                f"({exc.msg})."
            ) from exc
        source = line.get("source-ref") if isinstance(line, dict) else None
        if not isinstance(source, str) or not source.startswith("s3://"):
            raise JobFailed(
                f"ClientError: Invalid input manifest {uri}: line {number} has no "
                '"source-ref": "s3://..." entry.'
            )
        objects.append(DataObject(index=len(objects), line=line, source_ref=source))
    if not objects:
        raise JobFailed(f"ClientError: The input manifest {uri} contains no data objects.")
    return objects
