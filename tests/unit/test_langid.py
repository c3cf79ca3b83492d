from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from atum_ai.local.langid import UNDETERMINED, detect_language, rank_languages

SAMPLES = {
    "en": "Hello, since this morning I cannot log in to the customer portal. Could you reset my password?",
    "de": "Guten Tag, seit heute Morgen kann ich mich nicht mehr im Kundenportal anmelden. Bitte helfen Sie mir.",
    "es": "Hola, desde esta mañana no puedo acceder al portal de clientes. ¿Pueden restablecer mi contraseña?",
    "fr": "Bonjour, depuis ce matin je ne peux plus me connecter au portail client. Pouvez-vous m'aider ?",
    "pt": "Olá, desde esta manhã não consigo entrar no portal do cliente. Podem redefinir a minha senha?",
    "it": "Buongiorno, da stamattina non riesco ad accedere al portale clienti. Potete aiutarmi?",
    "nl": "Goedemorgen, sinds vanochtend kan ik niet meer inloggen op het klantenportaal. Kunt u mij helpen?",
}


@pytest.mark.parametrize(("lang", "text"), sorted(SAMPLES.items()))
def test_detects_each_language_confidently(lang: str, text: str) -> None:
    detected, confidence = detect_language(text)
    assert detected == lang
    assert 0.9 < confidence <= 1.0


def test_subject_plus_body_with_placeholders() -> None:
    text = "Rechnung fehlt\nSehr geehrte Damen und Herren, <name> hat keine Rechnung erhalten. Mit freundlichen Grüßen <name>"
    assert detect_language(text)[0] == "de"


def test_short_ambiguous_text_leans_to_the_helpdesk_languages() -> None:
    assert detect_language("Help")[0] == "en"
    assert detect_language("Passwort zurücksetzen")[0] == "de"


def test_reply_above_a_quoted_thread_takes_the_opening_language() -> None:
    opening = "Vielen Dank für die schnelle Antwort, das Problem besteht aber weiterhin. " * 3
    quoted = "> On Monday the support team wrote: please restart the device and try again. " * 12
    assert detect_language(opening + "\n" + quoted)[0] == "de"


def test_restricting_candidates_and_normalised_probabilities() -> None:
    ranked = rank_languages(SAMPLES["pt"], ["es", "pt"], top=5)
    assert [lang for lang, _ in ranked] == ["pt", "es"]
    assert sum(p for _, p in ranked) == pytest.approx(1.0)
    assert detect_language(SAMPLES["it"], ["en", "de"])[0] in {"en", "de"}
    assert detect_language("anything", ["fr"]) == ("fr", 1.0)


def test_text_without_letters_is_undetermined() -> None:
    assert detect_language("") == (UNDETERMINED, 0.0)
    assert detect_language("12345 -- 678 <name>") == (UNDETERMINED, 0.0)


def test_unknown_language_code_is_rejected() -> None:
    with pytest.raises(ValueError):
        detect_language("hello", ["en", "xx"])
    with pytest.raises(ValueError):
        detect_language("hello", [])


def test_thread_safe_with_different_candidate_sets() -> None:
    jobs = [
        (text, None if i % 2 else sorted(SAMPLES))
        for i, text in enumerate(list(SAMPLES.values()) * 20)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: detect_language(job[0], job[1])[0], jobs))
    expected = [lang for lang in SAMPLES] * 20
    assert results == expected
