"""Which script a page is written in, for `languages: ["*"]` on Tesseract.

Two ways, measured on 41 samples (31 rendered DejaVu lines and pages, one word to two lines, in
en/de/fr/es/pl, ru/uk and el, and the 10 one-line evaldata images in 7 scripts), on the 2-core dev
machine under load, API objects loaded first:

- Tesseract's orientation and script detection (OSD, Debian's `tesseract-ocr-osd`): right on every
  page it answers (7 of 7, script confidence 2.2-9.2), 90-160 ms on a two-line page; but it needs 50
  characters and answers nothing on a line or two words. Told to try with 3-10 characters, it is
  wrong on short Latin lines ("Hello world" is Cyrillic to it, confidence 3.3): 14 of 23 short ones.
- Reading the page with each script's languages (`SCRIPT_LANGUAGES`) and keeping the reading
  with the best `reading_score`: 38 of 41 right (misses: one Han line Tesseract reads nothing in,
  "El niño" read as Cyrillic look-alikes, a short Greek line), but 9 reads per image: ~320 ms per
  image on these small ones, where OSD first (then these readings when it has no answer) is as
  right (38 of 41) in ~220 ms; on a full page, nine reads would cost nine times one. Scoring
  words found in the language's dictionary higher gained one sample at one weight and lost four
  at another: not used. One read with all nine scripts' languages at once was right on 18 of the
  23 short samples.

So OSD first, and the per-script readings where OSD gives no answer, which is on pages with few
characters, where nine reads are cheap. The winning reading is the page's: nothing is read twice.
OSD's orientation is not used (pages are read as they are).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from batchvision.models.ocr.languages import SCRIPT_LANGUAGES, script_of

# Tesseract OSD's script names (its `script_name`) → our script names; "Japanese" is Han with kana
# and "Korean" Han with Hangul, as OSD reports them.
OSD_SCRIPTS: dict[str, str] = {
    "Latin": "latin",
    "Cyrillic": "cyrillic",
    "Greek": "greek",
    "Han": "han",
    "Japanese": "kana",
    "Katakana": "kana",
    "Hiragana": "kana",
    "Hangul": "hangul",
    "Korean": "hangul",
    "Devanagari": "devanagari",
    "Arabic": "arabic",
    "Telugu": "telugu",
}
# OSD's script confidence is a ratio of its best script's score to the next; its right answers
# above were 2.2 and more. Under 1 it has no preference worth trusting.
OSD_MIN_SCRIPT_CONFIDENCE = 1.0

# Letters a script's readings may hold and still be of that script: Chinese and Japanese models
# both write Han and kana.
_SCRIPT_LETTERS: dict[str, frozenset[str]] = {
    "han": frozenset({"han", "kana"}),
    "kana": frozenset({"han", "kana"}),
}


def script_languages(installed: Iterable[str]) -> dict[str, list[str]]:
    """Per script, the installed languages `*` reads it with (scripts with none left out)."""
    have = set(installed)
    by_script = {
        script: [code for code in codes if code in have]
        for script, codes in SCRIPT_LANGUAGES.items()
    }
    return {script: codes for script, codes in by_script.items() if codes}


def osd_script(result: Mapping[str, Any] | None) -> str | None:
    """Our script name for a tesserocr `DetectOrientationScript` result, if OSD is sure of it."""
    if not result or float(result.get("script_conf", 0.0)) < OSD_MIN_SCRIPT_CONFIDENCE:
        return None
    return OSD_SCRIPTS.get(str(result.get("script_name", "")))


def reading_score(words: Sequence[tuple[str, float]], script: str) -> float:
    """How well a reading with `script`'s languages explains the page: the character-weighted
    mean of its words' confidences (0-100 → 0-1) times the share of its letters in that script (a
    Latin model reading Cyrillic writes confident Latin look-alikes; this discounts them)."""
    characters = sum(len(text) for text, _ in words)
    if characters == 0:
        return 0.0
    confidence = sum(len(text) * conf / 100.0 for text, conf in words) / characters
    accepted = _SCRIPT_LETTERS.get(script, frozenset({script}))
    scripts = [s for text, _ in words for s in map(script_of, text) if s is not None]
    share = sum(s in accepted for s in scripts) / len(scripts) if scripts else 0.0
    return confidence * share
