"""Checks every payload passes before it can reach the table.

Bad input gets a clear error naming the field, and nothing is written: PostgreSQL's jsonb
cannot store U+0000 or NaN, a lone surrogate cannot be encoded, and a naive datetime means
whatever the server's TimeZone says. All of these are refused here, not by the database.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol
from uuid import UUID

from atum_ai.errors import PayloadValidationError, ValidationError
from atum_ai.queue.models import JOB_TYPE_RE, MAX_DEDUPE_KEY_CHARS, NewJob

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_INT_BITS = 1024
# Times accepted into the tables (a job's run_after, a ticket event's occurred_at), in UTC.
# PostgreSQL stores 4713 BC .. 294276 AD, but a driver reads back only years 1..9999, so a
# run_after of "0001-01-01T00:00+01:00" (1 BC in UTC) would be stored and then break every
# read of the row; nothing real happens outside these bounds.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def time_range_error(value: datetime) -> str | None:
    """Why an aware datetime cannot be stored, or None when it can."""
    if EARLIEST_TIME <= value < LATEST_TIME:
        return None
    return f"must be between {EARLIEST_TIME:%Y-%m-%d} and {LATEST_TIME:%Y-%m-%d} (UTC)"


class PayloadValidator(Protocol):
    """Implemented by the handler registry: validate a payload against its job type's model
    and return the normalised JSON-ready dict. Raises PayloadValidationError naming the field.
    The queue core only knows this protocol, never the handlers."""

    def validate_payload(self, job_type: str, payload: dict[str, Any]) -> dict[str, Any]: ...


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


def field_path(parts: Sequence[Any], root: str = "payload") -> str:
    """``payload.a[0].b``; a key that is not a plain name is quoted as JSON (ASCII, bounded),
    so a key holding NUL, a lone surrogate, a newline or 1 MB of text cannot smuggle itself
    into an error message, a log line or ``last_error``."""
    out = root
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and _PLAIN_KEY.match(p):
            out += f".{p}"
        else:
            quoted = json.dumps(str(p)[:40] + ("…" if len(str(p)) > 40 else ""))
            out += f"[{quoted}]"
    return out


def _path(parts: list[str | int]) -> str:
    return field_path(parts)


def _normalise(value: Any, parts: list[str | int], depth: int) -> Any:
    """Return a JSON-ready copy, raising on anything PostgreSQL would reject."""
    if depth > MAX_DEPTH:
        raise PayloadValidationError(f"nested deeper than {MAX_DEPTH} levels", field=_path(parts))
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Python prints (and json.dumps) an int of more than 4,300 digits only with a
        # ValueError; no payload needs one.
        if value.bit_length() > MAX_INT_BITS:
            raise PayloadValidationError("integer too large", field=_path(parts))
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadValidationError("NaN/Infinity is not valid JSON", field=_path(parts))
        return value
    if isinstance(value, str):
        return _check_text(value, parts)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PayloadValidationError(
                "naive datetime; give a timezone (e.g. ...T09:00:00Z)", field=_path(parts)
            )
        return value.isoformat()
    if isinstance(value, date | UUID | Decimal):
        return str(value)
    if isinstance(value, Enum):
        return _normalise(value.value, parts, depth)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise PayloadValidationError("object keys must be strings", field=_path(parts))
            _check_text(k, [*parts, k])
            out[k] = _normalise(v, [*parts, k], depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_normalise(v, [*parts, i], depth + 1) for i, v in enumerate(value)]
    raise PayloadValidationError(
        f"{type(value).__name__} is not JSON-serialisable", field=_path(parts)
    )


def _check_text(s: str, parts: list[str | int]) -> str:
    if "\x00" in s:
        raise PayloadValidationError("contains a NUL character (U+0000)", field=_path(parts))
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadValidationError(
            "contains invalid unicode (a lone surrogate)", field=_path(parts)
        ) from None
    return s


def prepare_payload(
    job_type: str,
    payload: Any,
    *,
    validator: PayloadValidator | None = None,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> str:
    """Validate and serialise a payload; returns the JSON text that goes into the table."""
    if not isinstance(payload, dict):
        raise PayloadValidationError("must be a JSON object", field="payload")
    if validator is not None:
        payload = validator.validate_payload(job_type, _normalise(payload, [], 0))
    text, size = _serialise(payload)
    if size > max_bytes:
        raise PayloadValidationError(
            f"is {size:,} bytes, over the limit of {max_bytes:,} bytes", field="payload"
        )
    return text


# Compact, and strict about NaN/Infinity, as jsonb is. One encoder for every payload: json.dumps
# with options builds a new JSONEncoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _serialise(value: dict[str, Any]) -> tuple[str, int]:
    """(JSON text, its size in UTF-8 bytes). Most payloads are plain JSON values already:
    for those a type-only scan (:func:`_plain`) and one check of the encoded text replace the
    field-by-field walk, which built a path and re-encoded every string of every payload and
    was half the CPU of a bulk enqueue. Anything else, or any doubt (an escaped NUL, a lone
    surrogate), takes :func:`_normalise`, which converts what it can and names the bad field."""
    if _plain(value, 0):
        text = _ENCODER.encode(value)
        # The encoder escapes U+0000 as \u0000; a string holding a backslash then "u0000"
        # also matches, and merely takes the careful path.
        if "\\u0000" not in text:
            try:
                return text, len(text.encode("utf-8"))
            except UnicodeEncodeError:
                pass  # a lone surrogate: _normalise names the field
    text = _ENCODER.encode(_normalise(value, [], 0))
    return text, len(text.encode("utf-8"))


def _plain(value: Any, depth: int) -> bool:
    """True when ``value`` holds only exact dicts with str keys, lists, str, bool, None,
    finite floats and ints within MAX_INT_BITS, nested less than MAX_DEPTH deep: then the
    encoder's output is what :func:`_normalise` would give. Subclasses (enums, str
    subclasses), tuples, datetimes, UUIDs ... answer False and are converted by _normalise."""
    t = type(value)
    if t is str or t is bool or value is None:
        return True
    if t is int:
        return value.bit_length() <= MAX_INT_BITS
    if t is float:
        return math.isfinite(value)
    if depth >= MAX_DEPTH:
        return False
    if t is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    if t is list:
        return all(_plain(v, depth + 1) for v in value)
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_job_fields(job: NewJob) -> None:
    """Refuse job metadata the table would reject or misread (wrong types included: a
    NewJob is a plain dataclass, so nothing else checks them before the database would)."""
    if not isinstance(job.organization_id, UUID):
        raise ValidationError("must be a UUID", field="organization_id")
    if not isinstance(job.job_type, str) or not JOB_TYPE_RE.match(job.job_type):
        raise ValidationError(
            "must be 1-64 characters: a letter, then letters, digits, _ . : -", field="job_type"
        )
    if job.parent_id is not None and not isinstance(job.parent_id, UUID):
        raise ValidationError("must be a UUID", field="parent_id")
    if not isinstance(job.id, UUID):
        raise ValidationError("must be a UUID", field="id")
    if not _is_int(job.priority):
        raise ValidationError("must be an integer", field="priority")
    if job.max_retries is not None and not _is_int(job.max_retries):
        raise ValidationError("must be an integer", field="max_retries")
    if job.timeout_seconds is not None and (
        not isinstance(job.timeout_seconds, int | float) or isinstance(job.timeout_seconds, bool)
        or not math.isfinite(job.timeout_seconds)
    ):
        raise ValidationError("must be a number of seconds", field="timeout_seconds")
    if job.dedupe_key is not None and not isinstance(job.dedupe_key, str):
        raise ValidationError("must be a string", field="dedupe_key")
    if job.dedupe_key is not None:
        if not job.dedupe_key or len(job.dedupe_key) > MAX_DEDUPE_KEY_CHARS:
            raise ValidationError(f"must be 1-{MAX_DEDUPE_KEY_CHARS} characters", field="dedupe_key")
        if "\x00" in job.dedupe_key:
            raise ValidationError("contains a NUL character (U+0000)", field="dedupe_key")
        try:
            job.dedupe_key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("contains invalid unicode (a lone surrogate)",
                                  field="dedupe_key") from None
    if job.run_after is not None and (
        not isinstance(job.run_after, datetime) or job.run_after.utcoffset() is None
    ):
        raise ValidationError("must be a timezone-aware datetime", field="run_after")
    if job.run_after is not None and (problem := time_range_error(job.run_after)):
        raise ValidationError(problem, field="run_after")
    if job.max_retries is not None and not 0 <= job.max_retries <= 1000:
        raise ValidationError("must be between 0 and 1000", field="max_retries")
    if not -1_000_000 <= job.priority <= 1_000_000:
        raise ValidationError("must be between -1,000,000 and 1,000,000", field="priority")
    if job.timeout_seconds is not None and not 0.001 <= job.timeout_seconds <= 86_400:
        raise ValidationError("must be between 0.001 and 86400 seconds", field="timeout_seconds")
