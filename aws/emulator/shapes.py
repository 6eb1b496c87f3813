"""Check requests (and, in tests, responses) against botocore's own SageMaker service model.

The emulator is only useful if it rejects what the real service rejects, so it leans on the same
model boto3 ships instead of a hand-written schema. botocore's `ParamValidator` checks types,
required members and minimums; the service also enforces maximums, enums and patterns, which the
walker below adds in the service's own error wording.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape
from botocore.validate import ParamValidator


@functools.cache
def service_model() -> ServiceModel:
    """Loaded once: parsing the SageMaker model takes a noticeable fraction of a second."""
    return botocore.session.get_session().get_service_model("sagemaker")


def operation_model(name: str) -> OperationModel:
    return service_model().operation_model(name)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    """Java-flavoured patterns Python cannot compile (`\\p{L}`) are skipped, not guessed at."""
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:
        return None


def wire_to_python(value: Any, shape: Shape) -> Any:
    """Turn JSON-protocol epoch numbers into datetimes so filters compare like boto3 would send."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        return {
            key: wire_to_python(item, shape.members[key]) if key in shape.members else item
            for key, item in value.items()
        }
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [wire_to_python(item, shape.member) for item in value]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return {key: wire_to_python(item, shape.value) for key, item in value.items()}
    if (
        shape.type_name == "timestamp"
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        return datetime.fromtimestamp(value, tz=UTC)
    return value


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _constraint_errors(value: Any, shape: Shape, path: str) -> Iterator[str]:
    """Yield AWS-worded messages for max/enum/pattern violations, the checks botocore omits."""
    meta = shape.metadata
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members and item is not None:
                child = f"{path}.{_camel(key)}" if path else _camel(key)
                yield from _constraint_errors(item, shape.members[key], child)
        return
    if isinstance(shape, ListShape) and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            yield (
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"length less than or equal to {meta['max']}"
            )
        for index, item in enumerate(value):
            yield from _constraint_errors(item, shape.member, f"{path}.{index + 1}.member")
        return
    if isinstance(shape, MapShape) and isinstance(value, dict):
        for key, item in value.items():
            yield from _constraint_errors(key, shape.key, f"{path}.key")
            yield from _constraint_errors(item, shape.value, f"{path}.{key}")
        return
    if shape.type_name == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            yield (
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"length less than or equal to {meta['max']}"
            )
        if shape.enum and value not in shape.enum:
            yield (
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must satisfy "
                f"enum value set: [{', '.join(shape.enum)}]"
            )
        pattern = meta.get("pattern")
        compiled = _compiled(pattern) if pattern else None
        if compiled is not None and not compiled.fullmatch(value):
            yield (
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must satisfy "
                f"regular expression pattern: {pattern}"
            )
        return
    numeric = shape.type_name in ("integer", "long", "float", "double")
    if numeric and isinstance(value, int | float) and "max" in meta and value > meta["max"]:
        yield (
            f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
            f"value less than or equal to {meta['max']}"
        )


def validation_errors(params: Mapping[str, Any], shape: Shape) -> list[str]:
    """All problems with `params` (Python-side values) for `shape`; empty when valid."""
    report = ParamValidator().validate(dict(params), shape)
    if report.has_errors():
        return [report.generate_report()]
    return list(_constraint_errors(params, shape, ""))


def format_validation_message(errors: list[str]) -> str:
    """The service prefixes constraint lists with a count; botocore reports are passed through."""
    if len(errors) == 1 and errors[0].startswith("Parameter validation failed"):
        return errors[0]
    noun = "error" if len(errors) == 1 else "errors"
    return f"{len(errors)} validation {noun} detected: " + "; ".join(errors)


def missing_required(value: Any, shape: Shape, path: str = "") -> list[str]:
    """Required output members that are absent, so a response test can name each one."""
    missing: list[str] = []
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for name in shape.required_members:
            if name not in value:
                missing.append(f"{path}.{name}" if path else name)
        for key, item in value.items():
            if key in shape.members:
                child = f"{path}.{key}" if path else key
                missing.extend(missing_required(item, shape.members[key], child))
    elif isinstance(shape, ListShape) and isinstance(value, list):
        for index, item in enumerate(value):
            missing.extend(missing_required(item, shape.member, f"{path}[{index}]"))
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        for key, item in value.items():
            missing.extend(missing_required(item, shape.value, f"{path}[{key}]"))
    return missing
