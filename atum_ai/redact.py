"""Keep secrets and control characters out of logs, errors and the database.

Every string that reaches ``last_error``, ``job_events.message`` or a log line goes through
:func:`sanitize_error`. Known secrets (the configured API key) are registered once at start;
common token shapes are masked even when nobody registered them.
"""

from __future__ import annotations

import re

_SECRET_PATTERNS = [
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._\-~+/]{8,}=*"),
    re.compile(r"(?i)\b(api[_-]?key|password|passwd|secret|token)(\s*[=:]\s*)[^\s,;&'\"]{4,}"),
    re.compile(r"(?i)(postgres(?:ql)?://[^:/\s]+:)[^@\s]+(@)"),  # password in a DSN
]
_registered: set[str] = set()

MAX_ERROR_CHARS = 2000


def register_secret(value: str | None) -> None:
    """Remember a secret (e.g. the configured API key) so it is masked wherever it appears."""
    if value and len(value) >= 6:
        _registered.add(value)


def redact_secrets(text: str) -> str:
    for secret in _registered:
        text = text.replace(secret, "[REDACTED]")
    text = _SECRET_PATTERNS[0].sub("[REDACTED]", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)} [REDACTED]", text)
    text = _SECRET_PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED]", text)
    text = _SECRET_PATTERNS[3].sub(lambda m: f"{m.group(1)}[REDACTED]{m.group(2)}", text)
    return text


def strip_nul(text: str) -> str:
    """PostgreSQL text and jsonb cannot hold U+0000; drop it rather than fail the write."""
    return text.replace("\x00", "")


def sanitize_error(text: object, limit: int = MAX_ERROR_CHARS) -> str:
    """NUL-free, secret-free, bounded: safe for ``last_error``, events and logs."""
    s = redact_secrets(strip_nul(str(text)))
    # Lone surrogates cannot be encoded to UTF-8 and would break the write.
    s = s.encode("utf-8", "replace").decode("utf-8")
    if len(s) > limit:
        s = s[: limit - 15] + "… [truncated]"
    return s
