"""Mask personal data before a prompt leaves the machine; restore it in what agents see.

One :class:`PiiMasker` per LLM call (a "session"). It replaces e-mail addresses, phone
numbers, IBANs, payment card numbers, IP addresses and the dataset's personal-data
placeholders (``<name>``, ``<tel_num>`` ...) with typed, numbered tokens such as
``[EMAIL_1]`` or ``[PHONE_2]``. Within a session the same value always gets the same token,
so the model can still tell "the same customer wrote twice" from "two customers". After the
call, :meth:`PiiMasker.unmask` puts the originals back into the model's answer.

Precision over recall where the two conflict: a masked order number is harmless, but a
masked date or amount changes what the model reads. Hence the checks: cards must pass
Luhn, IBANs mod 97, phone numbers need 7 to 15 digits and must not look like a date.

The mapping is the very data we are protecting, so it never appears in ``repr()`` (and
therefore not in logs, tracebacks or ``rich`` output).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# --- token format ------------------------------------------------------------------------
KINDS = ("EMAIL", "PHONE", "IBAN", "CARD", "IP", "NAME", "ACCOUNT", "ADDRESS", "TOKEN")
# Case-insensitive on purpose: models sometimes echo "[Email_1]".
_TOKEN_RE = re.compile(rf"\[(?P<kind>{'|'.join(KINDS)})_(?P<n>\d{{1,6}})\]", re.IGNORECASE)

# --- detectors ---------------------------------------------------------------------------
# \w is Unicode-aware, so "jürgen@müller.de" and IDN domains are found too.
# The local part takes every character RFC 5322 allows unquoted; the TLD is letters or an
# IDN "xn--" label.
_EMAIL_RE = re.compile(
    r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+"
    r"@[\w-]+(?:\.[\w-]+)*\.(?:[^\W\d_]{2,}|[Xx][Nn]--[\w-]+)(?![\w-])"
)

# A country code, two check digits, then 11-30 alphanumerics, optionally grouped by spaces.
# Longer than the real IBAN when followed by e.g. " BIC": the callback shrinks the candidate.
_IBAN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ \u00a0]?[A-Za-z0-9]){11,32}(?![A-Za-z0-9])"
)

# 13-19 digits, optionally grouped by single spaces or dashes.
_CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")

_IPV4_RE = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?!\d|\.\d)"
)
# Candidate only; ipaddress decides. Dots allow IPv4-mapped forms (::ffff:192.0.2.1).
_IPV6_RE = re.compile(r"(?<![\w:.])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%\w+)?(?![\w:])")

# A run of digit groups joined by phone-ish separators, optionally led by + or 00 and with an
# area code in parentheses. Validated in the callback (digit count, not a date). The run is
# matched greedily and validated as a whole, so a rejected 16-digit run is not re-scanned for
# a 12-digit "phone" inside it.
_PHONE_RE = re.compile(
    r"(?<![\w+/.,-])"
    r"(?:\+|00)?\(?\d{1,15}\)?"
    r"(?:(?:[ \u00a0.\-/]{1,2}|\s?\(\d{1,5}\)\s?)\d{1,10}){0,7}"
    r"(?![\w-]|[.,]\d)"
)
_DATE_LIKE_RE = re.compile(
    r"^(?:\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4})(?:[ T]\d{1,2})?$"
)
# Words that, right before a digit run, say "this is an identifier" (en, de, es, fr, pt).
_ID_CONTEXT_RE = re.compile(
    r"(?i)(?:#|\b(?:order|ticket|invoice|case|ref|reference|serial|tracking|id|auftrag\w*|"
    r"bestell\w*|rechnung\w*|vorgang\w*|pedido|factura|commande|facture|encomenda|fatura)"
    r"\.?(?:\s*(?:no|nr|number|nummer|n[º°o])\.?)?)\s*[:#]?\s*$"
)
PHONE_MIN_DIGITS = 7  # shorter runs are ticket numbers, amounts, years, small ids
PHONE_MAX_DIGITS = 15  # E.164 maximum

# Personal-data placeholders used by the ticket dataset (and by many anonymised exports).
# Only these names are masked: other bracketed words (<br>, <ticket_text>) are not personal.
_PLACEHOLDER_KINDS = {
    "name": "NAME", "nombre": "NAME", "nome": "NAME", "your_name": "NAME",
    "customer_name": "NAME", "full_name": "NAME", "first_name": "NAME", "last_name": "NAME",
    "tel_num": "PHONE", "phone": "PHONE", "phone_number": "PHONE", "telefon": "PHONE",
    "telefonnummer": "PHONE", "support_tel_num": "PHONE", "mobile": "PHONE",
    "acc_num": "ACCOUNT", "account_number": "ACCOUNT", "num_cuenta": "ACCOUNT",
    "iban": "IBAN", "card_number": "CARD", "credit_card": "CARD",
    "email": "EMAIL", "email_address": "EMAIL", "support_email": "EMAIL",
    "address": "ADDRESS", "street_address": "ADDRESS", "home_address": "ADDRESS",
    "ip_address": "IP",
}  # fmt: skip
_PLACEHOLDER_RE = re.compile(
    r"<\s*(" + "|".join(sorted(_PLACEHOLDER_KINDS, key=len, reverse=True)) + r")\s*>", re.IGNORECASE
)


def luhn_valid(digits: str) -> bool:
    """The payment-card checksum. ``digits`` must be digits only.

    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers
    (A=10 ... Z=35), and the result mod 97 must be 1.

    >>> iban_valid("DE89 3704 0044 0532 0130 00"), iban_valid("DE89 3704 0044 0532 0130 01")
    (True, False)
    """
    s = re.sub(r"\s", "", candidate).upper()
    if not (15 <= len(s) <= 34) or not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", s):
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


class PiiMasker:
    """A masking session: same value -> same token; :meth:`unmask` reverses it.

    Not thread-safe (one per call, by design). ``repr`` shows only counts.
    """

    __slots__ = ("_by_token", "_by_value", "_counters")

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_token: dict[str, str] = {}
        self._counters: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<PiiMasker tokens={len(self._by_token)}>"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # pragma: no cover - a guard, not a feature
        raise TypeError("PiiMasker holds personal data and must not be pickled")

    # Deliberately no __len__: an empty masker must still be truthy (`if masker:` checks).
    @property
    def size(self) -> int:
        """How many distinct values this session has masked."""
        return len(self._by_token)

    @property
    def counts(self) -> dict[str, int]:
        """How many distinct values of each kind were masked (safe to log)."""
        return dict(self._counters)

    # --- masking -------------------------------------------------------------------------

    def _token_for(self, kind: str, value: str) -> str:
        key = (kind, value)
        token = self._by_value.get(key)
        if token is None:
            n = self._counters.get(kind, 0) + 1
            self._counters[kind] = n
            token = f"[{kind}_{n}]"
            self._by_value[key] = token
            self._by_token[token] = value
        return token

    def _sub(
        self, pattern: re.Pattern[str], kind: str, accept: Callable[[str], bool], text: str
    ) -> str:
        def repl(m: re.Match[str]) -> str:
            value = m.group(0)
            return self._token_for(kind, value) if accept(value) else value

        return pattern.sub(repl, text)

    def mask(self, text: str) -> str:
        """Return ``text`` with personal data replaced by tokens.

        Order matters: the most specific detectors run first (an e-mail's digits are not a
        phone number, an IBAN's digits are not a card), and each later detector only sees the
        text left over, so overlapping matches cannot produce half-masked values.
        """
        if not text:
            return text
        # Text that already looks like one of our tokens would be "restored" wrongly by
        # unmask(); masking it too keeps the round trip exact.
        text = _TOKEN_RE.sub(lambda m: self._token_for("TOKEN", m.group(0)), text)
        text = self._mask_known(text)
        text = _PLACEHOLDER_RE.sub(
            lambda m: self._token_for(_PLACEHOLDER_KINDS[m.group(1).lower()], m.group(0)), text
        )
        text = self._sub(_EMAIL_RE, "EMAIL", lambda v: True, text)
        text = _IBAN_RE.sub(self._mask_iban_candidate, text)
        text = self._sub(_CARD_RE, "CARD", lambda v: luhn_valid(re.sub(r"\D", "", v)), text)
        # IPv6 first: an IPv4-mapped address (::ffff:192.0.2.1) ends in an IPv4 address.
        text = self._sub(_IPV6_RE, "IP", _looks_like_ipv6, text)
        text = self._sub(_IPV4_RE, "IP", lambda v: True, text)
        text = _PHONE_RE.sub(self._mask_phone_candidate, text)
        return text

    def _mask_known(self, text: str) -> str:
        """Replace values masked earlier in this session wherever they reappear (e.g. echoed
        in a validation error), even in a context the detectors would not recognise."""
        for (kind, _), token in sorted(self._by_value.items(), key=lambda kv: -len(kv[0][1])):
            if kind == "TOKEN":
                continue
            original = self._by_token[token]
            if len(original) >= 5 and original in text:
                # Whole values only: a known "1234567" must not eat the tail of "0171234567".
                bounded = re.compile(rf"(?<!\w){re.escape(original)}(?!\w)")
                text = bounded.sub(token, text)
        return text

    def _mask_iban_candidate(self, m: re.Match[str]) -> str:
        """Try the longest space-delimited prefix first, so "DE89 ... 00 BIC" masks the IBAN
        and keeps " BIC"."""
        candidate = m.group(0)
        cuts = [len(candidate)] + [
            i for i in range(len(candidate) - 1, 3, -1) if candidate[i] in " \u00a0"
        ]
        for cut in cuts:
            head = candidate[:cut]
            if iban_valid(head):
                return self._token_for("IBAN", head) + candidate[cut:]
        return candidate

    def _mask_phone_candidate(self, m: re.Match[str]) -> str:
        value = m.group(0)
        if not _looks_like_phone(value):
            return value
        # "Order 12345678", "ticket #9876543": identifiers, not phone numbers.
        if _ID_CONTEXT_RE.search(m.string, max(0, m.start() - 30), m.start()):
            return value
        return self._token_for("PHONE", value)

    # --- unmasking -----------------------------------------------------------------------

    def unmask(self, text: str) -> str:
        """Restore the originals of this session's tokens; unknown tokens stay as they are."""
        if not text or not self._by_token:
            return text

        def repl(m: re.Match[str]) -> str:
            token = f"[{m.group('kind').upper()}_{int(m.group('n'))}]"
            return self._by_token.get(token, m.group(0))

        return _TOKEN_RE.sub(repl, text)

    def unmask_obj(self, obj: Any) -> Any:
        """Unmask every string inside nested dicts / lists / tuples / models (keys included:
        JSON objects keyed by e-mail address exist)."""
        if isinstance(obj, str):
            return self.unmask(obj)
        if isinstance(obj, BaseModel):
            return self.unmask_model(obj)
        if isinstance(obj, dict):
            return {self.unmask_obj(k): self.unmask_obj(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.unmask_obj(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self.unmask_obj(v) for v in obj)
        return obj

    def unmask_model(self, model: M) -> M:
        """A new, re-validated instance of ``model`` with its string fields unmasked.

        Re-validation (rather than ``model_copy(update=...)``) keeps the model's invariants
        and works for frozen models.
        """
        data = self.unmask_obj(model.model_dump(mode="python", by_alias=True))
        return type(model).model_validate(data)


def _looks_like_ipv6(value: str) -> bool:
    if value.count(":") < 2 or not any(c.isdigit() for c in value):
        return False  # "::" or "dead::beef" in prose are not worth the false positive
    try:
        ipaddress.IPv6Address(value.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _looks_like_phone(value: str) -> bool:
    digits = sum(c.isdigit() for c in value)
    if not PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS:
        return False
    international = value.startswith(("+", "00"))
    if not international and _DATE_LIKE_RE.match(value):
        return False
    # Dotted runs are phones in some countries (06.12.34.56.78) but usually versions or
    # build numbers (10.0.19045.2965): accept them only when no group is a single digit.
    dotted = not international and "." in value
    return not (dotted and any(len(g) < 2 for g in re.split(r"\D+", value) if g))
