"""Languages: ISO 639-1 codes on the wire, engine codes inside, and per-word language by script.

Every code the `ocr` skill accepts is listed in `LANGUAGES` with its Tesseract traineddata name and
the Unicode script it is written in. PP-OCR's shipped recognition model (one multilingual
dictionary: CJK, kana, Latin with diacritics, unaccented Greek; no Cyrillic, Hangul, Arabic or
Indic scripts) reads only the languages listed in `PPOCR_LANGUAGES`.

When an engine cannot say which language recognised a word, `infer_language` picks one from the
word's characters: the script most of its letters belong to, then, among the requested languages
written in that script, one whose distinctive letters occur in the word (ё/ы/э → ru,
і/ї/є/ґ → uk, ђ/ј/љ/њ/ћ/џ → sr, ä/ö/ü/ß → de, ą/ę/ł/ś/ź/ż → pl, kana → ja, …), else the first
requested one. A word without letters (digits, punctuation) takes its line's language.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

from batchvision.core.errors import BatchVisionError, ErrorCode


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1
    name: str
    tesseract: str  # traineddata name
    script: str  # see `script_of`


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("en", "English", "eng", "latin"),
        Language("de", "German", "deu", "latin"),
        Language("fr", "French", "fra", "latin"),
        Language("es", "Spanish", "spa", "latin"),
        Language("it", "Italian", "ita", "latin"),
        Language("pt", "Portuguese", "por", "latin"),
        Language("pl", "Polish", "pol", "latin"),
        Language("la", "Latin", "lat", "latin"),
        Language("ru", "Russian", "rus", "cyrillic"),
        Language("uk", "Ukrainian", "ukr", "cyrillic"),
        Language("sr", "Serbian (Cyrillic)", "srp", "cyrillic"),
        Language("el", "Greek", "ell", "greek"),
        Language("zh", "Chinese (Simplified)", "chi_sim", "han"),
        Language("ja", "Japanese", "jpn", "han"),
        Language("ko", "Korean", "kor", "hangul"),
        Language("hi", "Hindi", "hin", "devanagari"),
        Language("fa", "Persian", "fas", "arabic"),
        Language("te", "Telugu", "tel", "telugu"),
    )
}

# What `languages: ["*"]` or no languages means.
DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "ru")

MAX_LANGUAGES = 8

PPOCR_LANGUAGES: frozenset[str] = frozenset(
    {"en", "de", "fr", "es", "it", "pt", "pl", "la", "zh", "ja"}
)

_BY_TESSERACT = {lang.tesseract: lang.code for lang in LANGUAGES.values()}

# Letters that point at one language among those sharing a script.
_MARKERS: dict[str, str] = {
    "ru": "ёыэъ",
    "uk": "іїєґ",
    "sr": "ђјљњћџ",
    "de": "äöüß",
    "pl": "ąęłńśźż",
    "fr": "œçêëèîïûù",
    "es": "ñ¿¡",
    "pt": "ãõ",
    "it": "ìò",
}

_SCRIPT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("LATIN", "latin"),
    ("CYRILLIC", "cyrillic"),
    ("GREEK", "greek"),
    ("CJK", "han"),
    ("HIRAGANA", "kana"),
    ("KATAKANA", "kana"),
    ("HANGUL", "hangul"),
    ("DEVANAGARI", "devanagari"),
    ("ARABIC", "arabic"),
    ("TELUGU", "telugu"),
)


def resolve_languages(
    requested: list[str] | None, default: tuple[str, ...] | list[str] = DEFAULT_LANGUAGES
) -> list[str]:
    """Validated ISO codes in request order, without duplicates; `*`/empty → `default`."""
    if not requested or requested == ["*"]:
        return list(default)
    allowed = frozenset(LANGUAGES)
    codes: list[str] = []
    unknown: list[str] = []
    for raw in requested:
        code = raw.strip().lower()
        if code == "*":
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER, "ocr: '*' must be the only entry of languages"
            )
        if code not in allowed:
            unknown.append(raw)
        elif code not in codes:
            codes.append(code)
    if unknown:
        raise BatchVisionError(
            ErrorCode.INVALID_PARAMETER,
            f"ocr: unsupported languages {unknown}; supported: {', '.join(sorted(allowed))}",
        )
    return codes


def tesseract_code(code: str) -> str:
    return LANGUAGES[code].tesseract


def from_tesseract(name: str) -> str | None:
    return _BY_TESSERACT.get(name)


def script_of(char: str) -> str | None:
    """The script a letter belongs to (our coarse names), or None for digits, marks, symbols."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    if name.startswith(("FULLWIDTH LATIN", "HALFWIDTH LATIN")):
        return "latin"
    if name.startswith(("HALFWIDTH KATAKANA", "KATAKANA-HIRAGANA")):
        return "kana"
    for prefix, script in _SCRIPT_PREFIXES:
        if name.startswith(prefix):
            return script
    return None


def dominant_script(text: str) -> str | None:
    counts = Counter(s for s in map(script_of, text) if s is not None)
    if not counts:
        return None
    return counts.most_common(1)[0][0]


def infer_language(text: str, languages: list[str], fallback: str | None = None) -> str:
    """Pick one of `languages` for a word (see the module docstring)."""
    script = dominant_script(text)
    if script is None:
        return fallback if fallback in languages else languages[0]
    if script == "kana":
        candidates = [c for c in languages if c == "ja"] or [
            c for c in languages if LANGUAGES[c].script == "han"
        ]
    else:
        candidates = [c for c in languages if LANGUAGES[c].script == script]
    if not candidates:
        # The engine read a script none of the requested languages uses (a look-alike or a
        # stray glyph): report the requested language it most likely stands for.
        return fallback if fallback in languages else languages[0]
    if len(candidates) > 1:
        lowered = text.lower()
        for code in candidates:
            if any(ch in lowered for ch in _MARKERS.get(code, "")):
                return code
        if fallback in candidates:
            return fallback
    return candidates[0]
