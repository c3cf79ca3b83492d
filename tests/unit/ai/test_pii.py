from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from atum_ai.ai.pii import PiiMasker, iban_valid, luhn_valid


def masked(text: str) -> tuple[str, PiiMasker]:
    masker = PiiMasker()
    return masker.mask(text), masker


def test_email_is_masked_and_restored() -> None:
    out, masker = masked("Write to jane.doe+tickets@example.co.uk please.")
    assert out == "Write to [EMAIL_1] please."
    assert masker.unmask(out) == "Write to jane.doe+tickets@example.co.uk please."


def test_email_in_angle_brackets() -> None:
    out, _ = masked("From: Jane <jane@example.com>")
    assert out == "From: Jane <[EMAIL_1]>"


def test_unicode_email_and_text_around_it() -> None:
    text = "Grüße von jürgen.müller@beispiel.de — 谢谢"
    out, masker = masked(text)
    assert out == "Grüße von [EMAIL_1] — 谢谢"
    assert masker.unmask(out) == text


def test_same_value_gets_the_same_token_within_a_session() -> None:
    masker = PiiMasker()
    first = masker.mask("a@example.com and b@example.com")
    second = masker.mask("again a@example.com")
    assert first == "[EMAIL_1] and [EMAIL_2]"
    assert second == "again [EMAIL_1]"


@pytest.mark.parametrize(
    "phone",
    [
        "+49 30 1234567",
        "+1 (555) 123-4567",
        "0049 (0)30 1234567",
        "(030) 123 45 67",
        "555-123-4567",
        "06 12 34 56 78",
        "+33 6 12 34 56 78",
        "0301234567",
        "+86 138 0013 8000",
    ],
)
def test_phone_formats_are_masked(phone: str) -> None:
    out, masker = masked(f"Call me on {phone}, thanks")
    assert out == "Call me on [PHONE_1], thanks"
    assert masker.unmask(out) == f"Call me on {phone}, thanks"


@pytest.mark.parametrize(
    "text",
    [
        "Order #123456 arrived",
        "on 2024-01-15 at 10:30",
        "on 15.03.2024",
        "costs 1,234.56 EUR",
        "ticket 12345678",
        "Bestellnummer: 98765432",
        "version 10.0.19045.2965",
        "room 12, floor 3",
        "in 2023 we had 150 users",
    ],
)
def test_small_numbers_dates_and_ids_are_not_phones(text: str) -> None:
    out, _ = masked(text)
    assert out == text


def test_luhn_valid_card_is_masked_invalid_is_not() -> None:
    out, _ = masked("valid 4111 1111 1111 1111, invalid 4111 1111 1111 1112")
    assert out == "valid [CARD_1], invalid 4111 1111 1111 1112"


def test_card_with_dashes_and_without_separators() -> None:
    out, _ = masked("5500-0000-0000-0004 or 378282246310005")
    assert out == "[CARD_1] or [CARD_2]"


def test_iban_with_spaces_and_following_bic() -> None:
    out, masker = masked("IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX")
    assert out == "IBAN [IBAN_1] BIC COBADEFFXXX"
    assert masker.unmask(out).endswith("0130 00 BIC COBADEFFXXX")


def test_iban_checksum_is_required() -> None:
    out, _ = masked("GB82WEST12345698765432 vs GB82WEST12345698765433")
    assert out.startswith("[IBAN_1] vs ")
    assert "[IBAN_2]" not in out


@pytest.mark.parametrize(
    "ip", ["192.168.1.20", "10.0.0.1", "2001:db8::1", "fe80::1%eth0", "::ffff:192.0.2.1"]
)
def test_ip_addresses(ip: str) -> None:
    out, _ = masked(f"server {ip} is down.")
    assert out == "server [IP_1] is down."


def test_times_are_not_ipv6() -> None:
    out, _ = masked("at 10:30:00 the host 999.1.1.1 failed")
    assert out == "at 10:30:00 the host 999.1.1.1 failed"


def test_dataset_placeholders_are_typed_tokens() -> None:
    out, masker = masked(
        "Dear <name>, call <tel_num> about <acc_num>, mail <email>. <br> <ticket_text>"
    )
    assert (
        out == "Dear [NAME_1], call [PHONE_1] about [ACCOUNT_1], mail [EMAIL_1]. <br> <ticket_text>"
    )
    assert masker.unmask(out).startswith("Dear <name>, call <tel_num>")


def test_literal_token_text_in_input_round_trips() -> None:
    text = "I typed [EMAIL_1] literally; real one is x@example.com"
    out, masker = masked(text)
    assert "x@example.com" not in out
    assert masker.unmask(out) == text


def test_unmask_leaves_unknown_tokens_and_tolerates_case() -> None:
    masker = PiiMasker()
    masker.mask("a@example.com")
    assert masker.unmask("[Email_1] and [EMAIL_9]") == "a@example.com and [EMAIL_9]"


def test_repr_never_shows_values() -> None:
    masker = PiiMasker()
    masker.mask("secret.person@example.com +49 30 1234567")
    for text in (repr(masker), str(masker), f"{masker!r}"):
        assert "secret.person" not in text and "1234567" not in text
    assert masker.counts == {"EMAIL": 1, "PHONE": 1} and masker.size == 2
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(masker)


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True)
    email: str
    note: str


class Reply(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    draft: str
    contacts: list[Contact]
    tags: dict[str, str]
    score: float


def test_unmask_model_restores_nested_strings() -> None:
    masker = PiiMasker()
    masker.mask("jane@example.com +49 30 1234567")
    reply = Reply(
        draft="Hi, we will call [PHONE_1].",
        contacts=[Contact(email="[EMAIL_1]", note="n")],
        tags={"[EMAIL_1]": "[PHONE_1]"},
        score=0.5,
    )
    restored = masker.unmask_model(reply)
    assert isinstance(restored, Reply)
    assert restored.draft == "Hi, we will call +49 30 1234567."
    assert restored.contacts[0].email == "jane@example.com"
    assert restored.tags == {"jane@example.com": "+49 30 1234567"}
    assert masker.unmask_obj({"a": ["[EMAIL_1]", ("[PHONE_1]", 3)]}) == {
        "a": ["jane@example.com", ("+49 30 1234567", 3)]
    }


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid(
        "DE00 3704 0044 0532 0130 00"
    )


@given(st.text(max_size=200))
def test_mask_then_unmask_is_identity(text: str) -> None:
    masker = PiiMasker()
    assert masker.unmask(masker.mask(text)) == text


@given(st.emails())
def test_generated_emails_never_survive(email: str) -> None:
    out = PiiMasker().mask(f"contact: {email} .")
    assert email not in out
