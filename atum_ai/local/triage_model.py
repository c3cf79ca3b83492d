"""Local (no-LLM) triage: per-organization classifiers trained on the tenant's labelled tickets.

One :class:`TriageModel` holds, for one organization, a classifier per field (``queue``,
``type``, ``priority`` and any tenant field such as ``intent``) over ONE shared text
representation: TF-IDF word n-grams plus TF-IDF character n-grams (``char_wb``), which
copes with inflected languages (German compounds), typos and the short subjects. Each
field is a class-balanced logistic regression, chosen for macro-F1 on noisy labels and
because it yields probabilities; those are temperature-scaled per field on out-of-fold
predictions so that "0.8" means roughly "right 8 times in 10" (see :func:`_fit_temperature`).

Usage::

    model = TriageModel.fit(examples, trained_at=clock.now())
    blob = model.to_bytes()                 # the caller stores it (PostgreSQL bytea)
    model = TriageModel.from_bytes(blob)    # refuses another format or scikit-learn version
    model.predict(subject, body)["queue"]   # FieldPrediction(label, confidence, band, ...)

Graceful degradation: a field with a single class, or with too few labelled examples to
learn from, predicts its majority class with a fixed low confidence instead of failing.

Security: ``from_bytes`` unpickles. Only load blobs this code wrote into the project's own
database; never a blob from a user upload.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Final

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import LinearSVC

from atum_ai.errors import AtumError
from atum_ai.local.confidence import ConfidenceBand, clamp_confidence, confidence_band

__all__ = [
    "DEFAULT_FIELDS",
    "FieldPrediction",
    "LabelledTicket",
    "ModelFormatError",
    "TriageConfig",
    "TriageModel",
    "TriageModelMetadata",
    "prepare_text",
]

FORMAT_NAME: Final = "atum-ai/triage-model"
FORMAT_VERSION: Final = 1
_MAGIC: Final = b"ATUMTRI\x00"

DEFAULT_FIELDS: Final = ("queue", "type", "priority")

# Bounds on what reaches the vectorizers: a 1 MB paste costs the same as a 20 kB one.
MAX_SUBJECT_CHARS: Final = 1_000
MAX_BODY_CHARS: Final = 20_000

# A field needs at least this many labelled tickets (and two classes) to get a classifier.
MIN_EXAMPLES_PER_FIELD: Final = 10
# Confidence reported by a field that could not be trained (single class / too few rows).
FALLBACK_CONFIDENCE: Final = 0.2
TOP_K_ALTERNATIVES: Final = 3
MAX_CLASSES_FOR_BIAS_TUNING: Final = 20


class ModelFormatError(AtumError):
    """A stored model blob is not one this code can load (other format, version or sklearn).

    The fix is to retrain the organization's model; it is never retried.
    """


@dataclass(frozen=True, slots=True)
class LabelledTicket:
    """A training example: text plus the tenant's labels (``{"queue": ..., "type": ...}``).

    A missing or empty label means "not labelled for that field": the ticket still feeds the
    shared vectorizer and the other fields.
    """

    subject: str
    body: str
    labels: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class FieldPrediction:
    label: str
    confidence: float
    band: ConfidenceBand
    # Top-k (label, probability), best first; the first entry is the prediction itself.
    alternatives: tuple[tuple[str, float], ...] = ()
    # False when the field fell back to its majority class (single class, too few examples).
    trained: bool = True


@dataclass(frozen=True, slots=True)
class TriageConfig:
    """Hyper-parameters. The defaults were picked by ``bench/eval_triage.py`` (5-fold CV)."""

    word_ngram_range: tuple[int, int] = (1, 3)
    char_ngram_range: tuple[int, int] = (2, 5)
    min_df: int = 1
    max_df: float = 0.9
    sublinear_tf: bool = True
    max_word_features: int | None = 100_000
    max_char_features: int | None = 150_000
    # Inverse regularization strength per field; fields not listed use ``C``.
    C: float = 5.0
    field_C: tuple[tuple[str, float], ...] = ()
    class_weight: str | None = "balanced"
    # "logreg" (multinomial logistic regression) or "linear_svc" (one-vs-rest, squared hinge);
    # either way the margins go through a per-field temperature softmax.
    estimator: str = "logreg"
    max_iter: int = 2_000
    # Temperature-scale probabilities per field from out-of-fold predictions (k folds).
    calibrate: bool = True
    # Shift per-class decision offsets to maximize macro-F1 on the same out-of-fold scores
    # (fields with at most MAX_CLASSES_FOR_BIAS_TUNING classes): True for every field, or
    # the names of the fields to tune. Priority only by default: on the dev tickets it lifts
    # priority's macro-F1 from 0.441 to 0.448 (5-fold CV), while tuning queue too costs queue
    # 0.017. Free at training time when calibrating (the same out-of-fold scores).
    tune_biases: bool | tuple[str, ...] = ("priority",)
    calibration_folds: int = 3
    random_state: int = 0
    # The subject is short and topical: repeating it weighs it against the long body.
    subject_repeat: int = 1

    def c_for(self, field_name: str) -> float:
        return dict(self.field_C).get(field_name, self.C)

    def tunes_biases_for(self, field_name: str) -> bool:
        if isinstance(self.tune_biases, bool):
            return self.tune_biases
        return field_name in self.tune_biases


@dataclass(frozen=True, slots=True)
class TriageModelMetadata:
    n_examples: int
    fields: tuple[str, ...]
    label_counts: dict[str, dict[str, int]]
    # Fields that predict a constant (and why), e.g. {"intent": "single class"}.
    degraded_fields: dict[str, str]
    trained_at: datetime | None
    config: dict[str, Any]
    sklearn_version: str
    format_version: int = FORMAT_VERSION


# --------------------------------------------------------------------------------------
# Text preparation
# --------------------------------------------------------------------------------------

_CONTROL_TRANSLATION: Final = {
    cp: " " for cp in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)
}


def _clean(text: str | None, limit: int) -> str:
    if not text:
        return ""
    if not isinstance(text, str):  # defensive: bytes or numbers from a sloppy caller
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    text = text[:limit]
    # NUL and other C0 controls become spaces; lone surrogates (bad JSON) become U+FFFD.
    text = text.translate(_CONTROL_TRANSLATION)
    text = text.encode("utf-8", "replace").decode("utf-8")
    # NFKC folds full-width forms and ligatures so "ｐａｓｓｗｏｒｄ" meets "password".
    return unicodedata.normalize("NFKC", text)


def prepare_text(subject: str | None, body: str | None, subject_repeat: int = 1) -> str:
    """The one text the vectorizers see: bounded, NUL-free, NFKC-normalized subject + body."""
    subj = _clean(subject, MAX_SUBJECT_CHARS)
    return "\n".join([subj] * max(1, subject_repeat) + [_clean(body, MAX_BODY_CHARS)])


# --------------------------------------------------------------------------------------
# Model pieces
# --------------------------------------------------------------------------------------


class _Featurizer:
    """Word + char_wb TF-IDF, fit once and shared by every field's classifier."""

    def __init__(self, config: TriageConfig) -> None:
        self.word: TfidfVectorizer | None = TfidfVectorizer(
            analyzer="word",
            ngram_range=config.word_ngram_range,
            min_df=config.min_df,
            max_df=config.max_df,
            sublinear_tf=config.sublinear_tf,
            max_features=config.max_word_features,
            lowercase=True,
            strip_accents=None,
            dtype=np.float32,
        )
        self.char: TfidfVectorizer | None = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=config.char_ngram_range,
            min_df=config.min_df,
            max_df=config.max_df,
            sublinear_tf=config.sublinear_tf,
            max_features=config.max_char_features,
            lowercase=True,
            dtype=np.float32,
        )

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        parts = []
        for name in ("word", "char"):
            vec = getattr(self, name)
            try:
                parts.append(vec.fit_transform(texts))
            except ValueError:  # empty vocabulary (tiny corpus, min_df too high): relax
                vec.set_params(min_df=1, max_df=1.0)
                try:
                    parts.append(vec.fit_transform(texts))
                except ValueError:  # still nothing (e.g. only one-letter words): drop it
                    setattr(self, name, None)
        if not parts:
            # Nothing to learn from at all; a constant column keeps the shapes valid.
            return sp.csr_matrix(np.ones((len(texts), 1), dtype=np.float32))
        return sp.hstack(parts, format="csr")

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        parts = [_fast_tfidf(v, texts) for v in (self.word, self.char) if v is not None]
        if not parts:
            return sp.csr_matrix(np.ones((len(texts), 1), dtype=np.float32))
        return sp.hstack(parts, format="csr")


def _fast_tfidf(vec: TfidfVectorizer, texts: Sequence[str]) -> sp.csr_matrix:
    """``vec.transform(texts)`` without the per-call input validation, which costs as much as
    the tf-idf arithmetic for one ticket. Same steps as ``TfidfTransformer.transform``
    (sublinear tf, idf, L2 rows); a unit test pins the equality."""
    X = CountVectorizer.transform(vec, texts).astype(np.float32, copy=False)
    if vec.sublinear_tf:
        np.log(X.data, X.data)
        X.data += 1.0
    if vec.use_idf:
        X.data *= vec.idf_[X.indices].astype(np.float32, copy=False)
    if vec.norm == "l2":
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        norms = np.sqrt(np.bincount(rows, weights=X.data.astype(np.float64) ** 2,
                                    minlength=X.shape[0]))
        norms[norms == 0.0] = 1.0
        X.data /= norms[rows].astype(np.float32)
    elif vec.norm is not None:  # pragma: no cover - not used by TriageConfig
        return vec.transform(texts)
    return X


@dataclass(slots=True)
class _FieldClassifier:
    """One field as plain arrays: scores = X @ coef + intercept, softmax(scores / T).

    Keeping only the weights (not the sklearn estimator) makes prediction one sparse-dense
    product with no per-call input validation, and the pickle smaller. ``coef`` is None for
    a field that fell back to a constant (single class, too few examples).
    """

    classes: tuple[str, ...]
    coef: np.ndarray | None = None  # (n_features, n_classes), float32
    intercept: np.ndarray | None = None  # (n_classes,)
    temperature: float = 1.0
    fallback_label: str | None = None

    @classmethod
    def from_estimator(
        cls, est: Any, temperature: float, biases: np.ndarray | None = None
    ) -> _FieldClassifier:
        coef = np.asarray(est.coef_, dtype=np.float32)
        intercept = np.asarray(est.intercept_, dtype=np.float32).ravel()
        if coef.shape[0] == 1:  # binary: sklearn keeps the positive class's margin only
            coef = np.vstack([-coef / 2.0, coef / 2.0])
            intercept = np.array([-intercept[0] / 2.0, intercept[0] / 2.0], dtype=np.float32)
        if biases is not None:
            intercept = (intercept + biases).astype(np.float32)
        return cls(
            classes=tuple(str(c) for c in est.classes_),
            coef=np.ascontiguousarray(coef.T),
            intercept=intercept,
            temperature=temperature,
        )

    def predict_proba(self, X: sp.csr_matrix) -> np.ndarray:
        if self.coef is None or self.intercept is None:
            return np.ones((X.shape[0], 1), dtype=np.float64)
        scores = np.asarray(X @ self.coef, dtype=np.float64) + self.intercept
        return _softmax(scores / self.temperature)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _scores_2d(scores: np.ndarray) -> np.ndarray:
    return np.column_stack([-scores / 2.0, scores / 2.0]) if scores.ndim == 1 else scores


def _fit_temperature(scores: np.ndarray, y_idx: np.ndarray) -> float:
    """Temperature T minimizing the negative log-likelihood of softmax(scores / T).

    One parameter per field (Guo et al. 2017): it keeps the ranking, so labels and macro-F1
    are untouched; only the reported confidence moves. Golden-section search on log T.
    """

    def nll(log_t: float) -> float:
        p = _softmax(scores / math.exp(log_t))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y_idx)), y_idx], 1e-12, 1.0))))

    lo, hi = math.log(0.05), math.log(20.0)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(math.exp((lo + hi) / 2))


def _macro_f1(y_idx: np.ndarray, pred: np.ndarray, k: int) -> float:
    cm = np.bincount(y_idx * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1.mean())


def _fit_biases(scores: np.ndarray, y_idx: np.ndarray, passes: int = 2) -> np.ndarray:
    """Per-class offsets added to the scores that maximize macro-F1 (coordinate ascent on a
    grid). Balanced class weights get most of the way; this mops up what remains, e.g. a
    class the model under-predicts. Offsets stay small: the grid spans +-1 score std."""
    k = scores.shape[1]
    biases = np.zeros(k)
    grid = np.linspace(-1.0, 1.0, 21) * float(np.std(scores))
    best = _macro_f1(y_idx, np.argmax(scores, axis=1), k)
    for _ in range(passes):
        improved = False
        for j in range(k):
            for delta in grid:
                trial = biases.copy()
                trial[j] = delta
                f1 = _macro_f1(y_idx, np.argmax(scores + trial, axis=1), k)
                if f1 > best + 1e-9:
                    best, biases, improved = f1, trial, True
        if not improved:
            break
    return biases


def _new_estimator(config: TriageConfig, field_name: str) -> LogisticRegression | LinearSVC:
    if config.estimator == "linear_svc":
        return LinearSVC(
            C=config.c_for(field_name),
            class_weight=config.class_weight,
            max_iter=config.max_iter,
            random_state=config.random_state,
        )
    return LogisticRegression(
        C=config.c_for(field_name),
        class_weight=config.class_weight,
        max_iter=config.max_iter,
        solver="lbfgs",
        random_state=config.random_state,
    )


def _train_field(
    config: TriageConfig, field_name: str, X: sp.csr_matrix, y: Sequence[str]
) -> tuple[_FieldClassifier, str | None]:
    """Fit one field. Returns the classifier and, when degraded, the reason."""
    counts = Counter(y)
    if not counts:
        return _FieldClassifier(classes=()), "no labelled examples"
    majority = counts.most_common(1)[0][0]
    reason: str | None = None
    if len(counts) < 2:
        reason = "single class"
    elif len(y) < MIN_EXAMPLES_PER_FIELD:
        reason = f"fewer than {MIN_EXAMPLES_PER_FIELD} labelled examples"
    if reason:
        return _FieldClassifier(classes=(majority,), fallback_label=majority), reason

    y_arr = np.asarray(y, dtype=object)
    est = _new_estimator(config, field_name)
    est.fit(X, y_arr)

    temperature = 1.0
    biases = None
    # Out-of-fold scores need every class in every training fold: only calibrate / tune when
    # the smallest class has at least `calibration_folds` members.
    folds = config.calibration_folds
    want_biases = config.tunes_biases_for(field_name) and len(counts) <= MAX_CLASSES_FOR_BIAS_TUNING
    if (config.calibrate or want_biases) and min(counts.values()) >= folds >= 2:
        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.random_state)
        oof = cross_val_predict(
            _new_estimator(config, field_name), X, y_arr, cv=skf, method="decision_function"
        )
        oof = _scores_2d(oof)
        index = {c: i for i, c in enumerate(est.classes_)}
        y_idx = np.array([index[v] for v in y_arr])
        if want_biases:
            biases = _fit_biases(oof, y_idx)
            oof = oof + biases
        if config.calibrate:
            temperature = _fit_temperature(oof, y_idx)
    return _FieldClassifier.from_estimator(est, temperature, biases), None


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


class TriageModel:
    """Per-organization triage classifiers. Build with :meth:`fit` or :meth:`from_bytes`."""

    def __init__(
        self,
        featurizer: _Featurizer,
        classifiers: dict[str, _FieldClassifier],
        metadata: TriageModelMetadata,
    ) -> None:
        self._featurizer = featurizer
        self._classifiers = classifiers
        self.metadata = metadata

    # ---- training ---------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        examples: Sequence[LabelledTicket],
        fields: Sequence[str] | None = None,
        *,
        config: TriageConfig | None = None,
        trained_at: datetime | None = None,
    ) -> TriageModel:
        """Train on ``examples``. ``fields`` defaults to every label key present (queue, type,
        priority first). Thin data never raises: such fields degrade (see module doc); only
        zero examples or no labelled field at all is a ``ValueError``.

        ``trained_at`` is recorded as given (the caller's clock); nothing here reads the time.
        """
        config = config or TriageConfig()
        examples = list(examples)
        if not examples:
            raise ValueError("cannot train a triage model on zero examples")
        if fields is None:
            present = {k for ex in examples for k, v in ex.labels.items() if v}
            fields = [f for f in DEFAULT_FIELDS if f in present] + sorted(
                present - set(DEFAULT_FIELDS)
            )
        fields = tuple(dict.fromkeys(fields))  # de-duplicate, keep order
        if not fields:
            raise ValueError("no fields to train: the examples carry no labels")

        texts = [prepare_text(ex.subject, ex.body, config.subject_repeat) for ex in examples]
        featurizer = _Featurizer(config)
        X = featurizer.fit_transform(texts)

        classifiers: dict[str, _FieldClassifier] = {}
        label_counts: dict[str, dict[str, int]] = {}
        degraded: dict[str, str] = {}
        for name in fields:
            rows = [i for i, ex in enumerate(examples) if ex.labels.get(name)]
            y = [str(examples[i].labels[name]) for i in rows]
            label_counts[name] = dict(Counter(y).most_common())
            clf, reason = _train_field(config, name, X[rows], y)
            classifiers[name] = clf
            if reason:
                degraded[name] = reason

        cfg = asdict(config)
        metadata = TriageModelMetadata(
            n_examples=len(examples),
            fields=fields,
            label_counts=label_counts,
            degraded_fields=degraded,
            trained_at=trained_at,
            config=cfg,
            sklearn_version=sklearn.__version__,
        )
        return cls(featurizer, classifiers, metadata)

    # ---- inference --------------------------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        return self.metadata.fields

    def labels(self, field_name: str) -> tuple[str, ...]:
        """The label set a field can predict (the tenant's taxonomy as seen in training)."""
        try:
            return self._classifiers[field_name].classes
        except KeyError:
            raise KeyError(f"unknown field {field_name!r}; model has {self.fields}") from None

    def predict(self, subject: str | None, body: str | None) -> dict[str, FieldPrediction]:
        return self.predict_many([(subject, body)])[0]

    def predict_many(
        self, tickets: Iterable[tuple[str | None, str | None]]
    ) -> list[dict[str, FieldPrediction]]:
        """Batch prediction: one vectorizer pass, one matrix product per field."""
        repeat = int(self.metadata.config.get("subject_repeat", 1))
        texts = [prepare_text(s, b, repeat) for s, b in tickets]
        if not texts:
            return []
        X = self._featurizer.transform(texts)
        out: list[dict[str, FieldPrediction]] = [{} for _ in texts]
        for name, clf in self._classifiers.items():
            if clf.coef is None:
                label = clf.fallback_label or ""
                pred = FieldPrediction(
                    label=label,
                    confidence=FALLBACK_CONFIDENCE,
                    band=confidence_band(FALLBACK_CONFIDENCE),
                    alternatives=((label, FALLBACK_CONFIDENCE),),
                    trained=False,
                )
                for row in out:
                    row[name] = pred
                continue
            proba = clf.predict_proba(X)
            k = min(TOP_K_ALTERNATIVES, proba.shape[1])
            top = np.argsort(-proba, axis=1)[:, :k]
            for i, row in enumerate(out):
                alts = tuple(
                    (clf.classes[j], round(clamp_confidence(proba[i, j]), 4)) for j in top[i]
                )
                conf = clamp_confidence(float(proba[i, top[i, 0]]))
                row[name] = FieldPrediction(
                    label=alts[0][0],
                    confidence=round(conf, 4),
                    band=confidence_band(conf),
                    alternatives=alts,
                )
        return out

    # ---- persistence ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialize: magic, a JSON header (format, versions) and a zlib-compressed pickle.

        The header is read before anything is unpickled, so a blob from another format or
        scikit-learn version is refused with a clear message instead of a pickle error.
        """
        header = json.dumps(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "sklearn_version": sklearn.__version__,
                "numpy_version": np.__version__,
            }
        ).encode()
        body = zlib.compress(
            pickle.dumps(
                {
                    "featurizer": self._featurizer,
                    "classifiers": self._classifiers,
                    "metadata": self.metadata,
                },
                protocol=pickle.HIGHEST_PROTOCOL,
            ),
            6,
        )
        buf = io.BytesIO()
        buf.write(_MAGIC)
        buf.write(len(header).to_bytes(4, "big"))
        buf.write(header)
        buf.write(body)
        return buf.getvalue()

    @classmethod
    def read_header(cls, blob: bytes) -> dict[str, Any]:
        """The JSON header of a blob, without unpickling (for listings and version checks)."""
        blob = bytes(blob)
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 4:
            raise ModelFormatError("not an atum_ai triage model (bad magic bytes)")
        n = int.from_bytes(blob[len(_MAGIC) : len(_MAGIC) + 4], "big")
        start = len(_MAGIC) + 4
        try:
            header = json.loads(blob[start : start + n])
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFormatError(f"corrupt triage model header: {exc}") from None
        if not isinstance(header, dict):
            raise ModelFormatError("corrupt triage model header")
        return header

    @classmethod
    def from_bytes(cls, blob: bytes) -> TriageModel:
        header = cls.read_header(blob)
        if header.get("format") != FORMAT_NAME:
            raise ModelFormatError(f"unknown model format {header.get('format')!r}")
        if header.get("format_version") != FORMAT_VERSION:
            raise ModelFormatError(
                f"triage model format version {header.get('format_version')} cannot be loaded "
                f"by this code (expects {FORMAT_VERSION}); retrain the model"
            )
        if header.get("sklearn_version") != sklearn.__version__:
            raise ModelFormatError(
                f"triage model was trained with scikit-learn {header.get('sklearn_version')}, "
                f"this process runs {sklearn.__version__}; retrain the model"
            )
        start = len(_MAGIC) + 4 + int.from_bytes(blob[len(_MAGIC) : len(_MAGIC) + 4], "big")
        try:
            state = pickle.loads(zlib.decompress(bytes(blob[start:])))
            return cls(state["featurizer"], state["classifiers"], state["metadata"])
        except (zlib.error, pickle.UnpicklingError, EOFError, KeyError, TypeError,
                AttributeError, ImportError, ValueError) as exc:  # truncated or corrupt body
            raise ModelFormatError(f"corrupt triage model body: {exc}") from None

    def with_metadata(self, **changes: Any) -> TriageModel:
        """A copy sharing the fitted parts, with metadata fields replaced."""
        return TriageModel(self._featurizer, self._classifiers, replace(self.metadata, **changes))

    def __repr__(self) -> str:
        return (
            f"TriageModel(fields={self.fields}, n_examples={self.metadata.n_examples}, "
            f"degraded={sorted(self.metadata.degraded_fields)})"
        )
