"""Local triage model: fit/predict, persistence, degradation, odd input. Invented tickets only."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest
import sklearn

from atum_ai.local.confidence import confidence_band
from atum_ai.local.triage_model import (
    FALLBACK_CONFIDENCE,
    FORMAT_VERSION,
    FieldPrediction,
    LabelledTicket,
    ModelFormatError,
    TriageConfig,
    TriageModel,
    prepare_text,
)

# Cheap settings: these tests are about behaviour, not accuracy.
FAST = TriageConfig(min_df=1, max_df=1.0, calibration_folds=2)

_TEMPLATES = {
    ("Billing", "Request", "low"): [
        ("Invoice copy", "Could you send me a copy of last month's invoice for my records?"),
        ("Receipt needed", "Please email the receipt for my annual subscription payment."),
        ("VAT number on invoice", "Our VAT number is missing on the invoice, please add it."),
    ],
    ("Billing", "Incident", "high"): [
        ("Charged twice", "My credit card was charged twice for the same order today."),
        ("Refund missing", "The refund you promised two weeks ago never reached my account."),
        ("Wrong amount billed", "You billed me 300 euros instead of 30, fix this immediately."),
    ],
    ("Technical", "Incident", "high"): [
        ("Server down", "Our production server is down and nobody can log in since 9am."),
        ("App crashes", "The mobile app crashes on startup after the latest update."),
        ("Database error", "We get a database connection error on every page of the portal."),
    ],
    ("Technical", "Change", "medium"): [
        ("Upgrade request", "Please upgrade our workspace to the new version next weekend."),
        ("Change DNS", "We would like to change the DNS records for our domain."),
        ("Add users", "Add five more user seats to our team plan and enable SSO."),
    ],
}


def _examples(copies: int = 4) -> list[LabelledTicket]:
    out = []
    for (queue, type_, prio), items in _TEMPLATES.items():
        for n, (subject, body) in itertools.product(range(copies), items):
            out.append(
                LabelledTicket(
                    subject=f"{subject} #{n}",
                    body=f"{body} Ticket reference {n}.",
                    labels={"queue": queue, "type": type_, "priority": prio},
                )
            )
    return out


@pytest.fixture(scope="module")
def model() -> TriageModel:
    return TriageModel.fit(
        _examples(), config=FAST, trained_at=datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    )


def test_fit_predict_round_trip(model: TriageModel) -> None:
    pred = model.predict("Charged twice again", "My card was charged twice for one order.")
    assert set(pred) == {"queue", "type", "priority"}
    assert pred["queue"].label == "Billing"
    assert pred["type"].label == "Incident"
    assert pred["priority"].label == "high"
    for p in pred.values():
        assert isinstance(p, FieldPrediction)
        assert 0.0 <= p.confidence <= 1.0
        assert p.band == confidence_band(p.confidence)
        assert p.alternatives[0][0] == p.label
        assert len(p.alternatives) <= 3
        probs = [a[1] for a in p.alternatives]
        assert probs == sorted(probs, reverse=True)
    tech = model.predict("Portal down", "The server is down, database connection error.")
    assert tech["queue"].label == "Technical"


def test_labels_and_metadata(model: TriageModel) -> None:
    assert model.labels("queue") == ("Billing", "Technical")
    assert set(model.labels("priority")) == {"low", "medium", "high"}
    md = model.metadata
    assert md.n_examples == 48
    assert md.fields == ("queue", "type", "priority")
    assert md.label_counts["queue"] == {"Billing": 24, "Technical": 24}
    assert md.trained_at == datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    assert md.degraded_fields == {}
    assert md.sklearn_version == sklearn.__version__
    with pytest.raises(KeyError, match="unknown field"):
        model.labels("nope")


def test_predict_many_matches_predict(model: TriageModel) -> None:
    tickets = [("Invoice copy", "Send me the invoice please."), ("Upgrade", "Upgrade our plan.")]
    batch = model.predict_many(tickets)
    assert batch == [model.predict(s, b) for s, b in tickets]
    assert model.predict_many([]) == []


def test_bytes_round_trip(model: TriageModel) -> None:
    blob = model.to_bytes()
    header = TriageModel.read_header(blob)
    assert header["format_version"] == FORMAT_VERSION
    assert header["sklearn_version"] == sklearn.__version__
    loaded = TriageModel.from_bytes(blob)
    assert loaded.metadata == model.metadata
    s, b = "Refund missing", "I never got my refund."
    assert loaded.predict(s, b) == model.predict(s, b)
    assert TriageModel.from_bytes(memoryview(blob).tobytes()).fields == model.fields


def _reheader(blob: bytes, **changes: object) -> bytes:
    import json

    magic, n = blob[:8], int.from_bytes(blob[8:12], "big")
    header = json.loads(blob[12 : 12 + n]) | changes
    raw = json.dumps(header).encode()
    return magic + len(raw).to_bytes(4, "big") + raw + blob[12 + n :]


def test_from_bytes_refuses_mismatch(model: TriageModel) -> None:
    blob = model.to_bytes()
    with pytest.raises(ModelFormatError, match="scikit-learn 0.1"):
        TriageModel.from_bytes(_reheader(blob, sklearn_version="0.1"))
    with pytest.raises(ModelFormatError, match="format version 99"):
        TriageModel.from_bytes(_reheader(blob, format_version=99))
    with pytest.raises(ModelFormatError, match="magic"):
        TriageModel.from_bytes(b"not a model at all")
    with pytest.raises(ModelFormatError, match="corrupt"):
        TriageModel.from_bytes(blob[: len(blob) // 2])


def test_single_class_field_degrades() -> None:
    examples = [
        LabelledTicket(ex.subject, ex.body, {**ex.labels, "intent": "billing_question"})
        for ex in _examples(2)
    ]
    m = TriageModel.fit(examples, config=FAST)
    assert m.fields == ("queue", "type", "priority", "intent")
    assert m.metadata.degraded_fields == {"intent": "single class"}
    p = m.predict("anything", "at all")["intent"]
    assert p.label == "billing_question"
    assert p.confidence == FALLBACK_CONFIDENCE
    assert p.band == "Low"
    assert p.trained is False
    assert m.labels("intent") == ("billing_question",)


def test_too_few_examples_and_partial_labels() -> None:
    examples = _examples(2)
    # Only three tickets carry an intent (two classes): too few to learn from.
    examples = [
        LabelledTicket(ex.subject, ex.body, {**ex.labels, "intent": ("a", "b", "a")[i]})
        if i < 3
        else ex
        for i, ex in enumerate(examples)
    ]
    m = TriageModel.fit(examples, config=FAST)
    assert "fewer than" in m.metadata.degraded_fields["intent"]
    assert m.metadata.label_counts["intent"] == {"a": 2, "b": 1}
    assert m.predict("x", "y")["intent"].label == "a"
    assert m.predict("x", "y")["queue"].trained


def test_tiny_training_set_does_not_crash() -> None:
    examples = [
        LabelledTicket("a", "x", {"queue": "Q1", "type": "Incident", "priority": "high"}),
        LabelledTicket("b", "y", {"queue": "Q2", "type": "Incident", "priority": "low"}),
    ]
    m = TriageModel.fit(examples, config=TriageConfig())  # default min_df on 2 docs
    pred = m.predict("", "")
    assert set(pred) == {"queue", "type", "priority"}
    assert all(p.band == "Low" for p in pred.values())
    with pytest.raises(ValueError):
        TriageModel.fit([], config=FAST)


def test_weird_input_does_not_crash(model: TriageModel) -> None:
    huge = "server down " * 90_000  # ~1 MB
    inputs = [
        ("", ""),
        (None, None),
        ("\x00\x00", "nul\x00inside\x00body"),
        ("🔥🔥 help 🙏", "😡 charged twice 💳💳 ¥€$ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u202e reversed"),
        ("lone surrogate \ud800", "bad \udfff json"),
        ("x" * 1_000_000, huge),
        ("ｆｕｌｌｗｉｄｔｈ", "\t\r\n\x0b\x0c\x1b[31m"),
    ]
    preds = model.predict_many(inputs)
    assert len(preds) == len(inputs)
    for p in preds:
        assert all(0.0 <= fp.confidence <= 1.0 for fp in p.values())


def test_prepare_text_bounds_and_cleans() -> None:
    text = prepare_text("a\x00b", "c" * 2_000_000)
    assert "\x00" not in text
    assert len(text) < 25_000
    assert prepare_text("ｐａｓｓ", None) == "pass\n"
    prepare_text("\ud800", "\udfff").encode("utf-8")  # no lone surrogates survive


def test_fit_takes_explicit_fields() -> None:
    m = TriageModel.fit(_examples(2), fields=["priority"], config=FAST)
    assert m.fields == ("priority",)
    assert set(m.predict("Server down", "down")) == {"priority"}


def test_fast_tfidf_matches_sklearn(model: TriageModel) -> None:


    from atum_ai.local.triage_model import _fast_tfidf

    texts = [prepare_text(s, b) for s, b in [("Server down", "Nobody can log in."), ("", ""),
                                              ("Invoice", "copy copy copy of the invoice")]]
    for vec in (model._featurizer.word, model._featurizer.char):
        assert vec is not None
        np.testing.assert_allclose(
            _fast_tfidf(vec, texts).toarray(), vec.transform(texts).toarray(), rtol=1e-5, atol=1e-6
        )


def test_bias_tuning_lifts_macro_f1_of_an_underpredicted_class() -> None:


    from atum_ai.local.triage_model import _fit_biases, _macro_f1

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=600)
    scores = rng.normal(size=(600, 3))
    scores[np.arange(600), y] += 1.0
    scores[:, 2] -= 1.5  # class 2 is almost never predicted
    before = _macro_f1(y, scores.argmax(axis=1), 3)
    biases = _fit_biases(scores, y)
    assert biases[2] > 0
    assert _macro_f1(y, (scores + biases).argmax(axis=1), 3) > before + 0.05


def test_fit_with_bias_tuning_and_calibration() -> None:
    m = TriageModel.fit(_examples(3), config=TriageConfig(min_df=1, tune_biases=True))
    p = m.predict("Server down", "Production server is down.")
    assert p["queue"].label == "Technical"
    assert m.metadata.config["tune_biases"] is True


def test_bias_tuning_for_named_fields_only() -> None:
    """tune_biases=("priority",) shifts priority's decision offsets and leaves the other
    fields exactly as an untuned fit would (same data, same seed)."""
    rng = np.random.default_rng(0)  # noisy, skewed priorities: the offsets have work to do
    examples = [LabelledTicket(ex.subject, ex.body, {**ex.labels, "priority": str(
        rng.choice(["low", "medium", "high"], p=[0.6, 0.3, 0.1]))}) for ex in _examples(6)]
    plain = TriageModel.fit(examples, config=TriageConfig(min_df=1, tune_biases=False))
    tuned = TriageModel.fit(examples, config=TriageConfig(min_df=1, tune_biases=("priority",)))
    for name in ("queue", "type"):
        assert np.array_equal(plain._classifiers[name].intercept, tuned._classifiers[name].intercept)
    assert not np.array_equal(plain._classifiers["priority"].intercept,
                              tuned._classifiers["priority"].intercept)
    assert tuned.metadata.config["tune_biases"] == ("priority",)
