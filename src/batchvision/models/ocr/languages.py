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

`languages: ["*"]` (`AUTO`) asks the engine to find the languages itself: Tesseract detects the
script and reads with that script's installed languages (`SCRIPT_LANGUAGES`); PP-OCR's one model
reads all its languages at once, so it infers each word's language among `PPOCR_AUTO_LANGUAGES`.
It is also the default (no languages given): the former default, en+ru read together, wrote
Latin look-alikes into Russian lines ("д. Александровка." read as "д. AzeKCAaHTPOBKA."), and
`bench/eval_ocr_default.py` compares the two.

A word's language confidence (`language_confidence`) is its recognition confidence times the
share of its letters written in that language's script (`script_share`): the claim "this word is
Russian" is only as sure as the reading it rests on, and a word spelled partly in look-alikes of
another script is less surely in the language. A word without letters carries no evidence of its
own: it takes its line's language with its confidence times the share of the line's lettered
words in that language.
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

AUTO = "*"

# What no languages (absent, null or []) means, for every engine: detect them (see the docstring).
DEFAULT_LANGUAGES: tuple[str, ...] = (AUTO,)

# The languages `*` reads a script with, most used first (Tesseract tries the first language on
# each word and the others only where it reads badly, so an English page costs the same with all
# eight Latin packs loaded as with eng alone, and German, Spanish or Polish letters come back
# right: "Grüße aus Köln" with eng alone is "GrtiBe aus Koln"). Han is read as Chinese: a page
# Tesseract's OSD calls Japanese has kana (see `OSD_SCRIPTS` in `models/ocr/autodetect.py`).
SCRIPT_LANGUAGES: dict[str, tuple[str, ...]] = {
    "latin": ("en", "de", "fr", "es", "it", "pt", "pl", "la"),
    "cyrillic": ("ru", "uk", "sr"),
    "greek": ("el",),
    "han": ("zh",),
    "kana": ("ja",),
    "hangul": ("ko",),
    "devanagari": ("hi",),
    "arabic": ("fa",),
    "telugu": ("te",),
}

MAX_LANGUAGES = 8

PPOCR_LANGUAGES: frozenset[str] = frozenset(
    {"en", "de", "fr", "es", "it", "pt", "pl", "la", "zh", "ja"}
)

# PP-OCR's `*`: every language its model reads; an unmarked Latin word is English.
PPOCR_AUTO_LANGUAGES: tuple[str, ...] = ("en", "zh", "ja", "de", "fr", "es", "it", "pt", "pl", "la")

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
    """Validated ISO codes in request order, without duplicates; empty → `default`; `["*"]` →
    `[AUTO]` (the engine detects the languages)."""
    if not requested:
        return list(default)
    if [code.strip() for code in requested] == [AUTO]:
        return [AUTO]
    allowed = frozenset(LANGUAGES)
    codes: list[str] = []
    unknown: list[str] = []
    for raw in requested:
        code = raw.strip().lower()
        if code == AUTO:
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


def is_auto(languages: list[str]) -> bool:
    return languages == [AUTO]


def script_share(text: str, code: str) -> float:
    """The share of a word's letters written in language `code`'s script (kana counts for ja)."""
    scripts = [s for s in map(script_of, text) if s is not None]
    if not scripts:
        return 0.0
    own = LANGUAGES[code].script
    accepted = {own, "kana"} if code == "ja" else {own}
    return sum(s in accepted for s in scripts) / len(scripts)
