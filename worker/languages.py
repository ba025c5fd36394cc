"""The languages a course may be written in: one table, keyed by ISO 639-3 code.

Each entry gives the language's English name (what ``prepare``, ``run``, ``status``, ``validate``
and the model's prompt say) and whether its script is written without spaces between words
(Chinese, Japanese, Thai, ...): there tiles meet directly and phrase length counts the known
side's words. A code, a two-letter ISO 639-1 code or an English name all find their entry.

>>> language("cmn").name, language("cmn").spaced
('Mandarin Chinese', False)
>>> language("es").code, language("Breton").code
('spa', 'bre')
>>> describe(language("cmn"), language("eng"))
'Mandarin Chinese for English speakers'
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """One entry of :data:`LANGUAGES`."""

    code: str  # ISO 639-3
    name: str
    spaced: bool = True
    alpha2: str | None = None  # ISO 639-1, where there is one


def _table(*entries: Language) -> dict[str, Language]:
    return {entry.code: entry for entry in entries}


UNSPACED = False

#: Every language the tool knows. Add a line to support another; ``spaced=UNSPACED`` for scripts
#: written without spaces between words.
LANGUAGES: dict[str, Language] = _table(
    # Written without spaces between words.
    Language("cmn", "Mandarin Chinese", UNSPACED, "zh"),
    Language("yue", "Cantonese", UNSPACED),
    Language("zho", "Chinese", UNSPACED),
    Language("wuu", "Wu Chinese", UNSPACED),
    Language("nan", "Min Nan Chinese", UNSPACED),
    Language("jpn", "Japanese", UNSPACED, "ja"),
    Language("tha", "Thai", UNSPACED, "th"),
    Language("lao", "Lao", UNSPACED, "lo"),
    Language("khm", "Khmer", UNSPACED, "km"),
    Language("mya", "Burmese", UNSPACED, "my"),
    Language("bod", "Tibetan", UNSPACED, "bo"),
    Language("dzo", "Dzongkha", UNSPACED, "dz"),
    # Written with spaces.
    Language("eng", "English", alpha2="en"),
    Language("spa", "Spanish", alpha2="es"),
    Language("fra", "French", alpha2="fr"),
    Language("ita", "Italian", alpha2="it"),
    Language("deu", "German", alpha2="de"),
    Language("por", "Portuguese", alpha2="pt"),
    Language("cat", "Catalan", alpha2="ca"),
    Language("glg", "Galician", alpha2="gl"),
    Language("eus", "Basque", alpha2="eu"),
    Language("nld", "Dutch", alpha2="nl"),
    Language("bre", "Breton", alpha2="br"),
    Language("cym", "Welsh", alpha2="cy"),
    Language("gle", "Irish", alpha2="ga"),
    Language("gla", "Scottish Gaelic", alpha2="gd"),
    Language("glv", "Manx", alpha2="gv"),
    Language("cor", "Cornish", alpha2="kw"),
    Language("ltz", "Luxembourgish", alpha2="lb"),
    Language("roh", "Romansh", alpha2="rm"),
    Language("fry", "Western Frisian", alpha2="fy"),
    Language("isl", "Icelandic", alpha2="is"),
    Language("fao", "Faroese", alpha2="fo"),
    Language("nor", "Norwegian", alpha2="no"),
    Language("nob", "Norwegian Bokmål", alpha2="nb"),
    Language("nno", "Norwegian Nynorsk", alpha2="nn"),
    Language("swe", "Swedish", alpha2="sv"),
    Language("dan", "Danish", alpha2="da"),
    Language("fin", "Finnish", alpha2="fi"),
    Language("est", "Estonian", alpha2="et"),
    Language("hun", "Hungarian", alpha2="hu"),
    Language("lit", "Lithuanian", alpha2="lt"),
    Language("lav", "Latvian", alpha2="lv"),
    Language("pol", "Polish", alpha2="pl"),
    Language("ces", "Czech", alpha2="cs"),
    Language("slk", "Slovak", alpha2="sk"),
    Language("slv", "Slovenian", alpha2="sl"),
    Language("hrv", "Croatian", alpha2="hr"),
    Language("srp", "Serbian", alpha2="sr"),
    Language("bos", "Bosnian", alpha2="bs"),
    Language("mkd", "Macedonian", alpha2="mk"),
    Language("bul", "Bulgarian", alpha2="bg"),
    Language("ron", "Romanian", alpha2="ro"),
    Language("ell", "Greek", alpha2="el"),
    Language("sqi", "Albanian", alpha2="sq"),
    Language("mlt", "Maltese", alpha2="mt"),
    Language("rus", "Russian", alpha2="ru"),
    Language("ukr", "Ukrainian", alpha2="uk"),
    Language("bel", "Belarusian", alpha2="be"),
    Language("kat", "Georgian", alpha2="ka"),
    Language("hye", "Armenian", alpha2="hy"),
    Language("tur", "Turkish", alpha2="tr"),
    Language("aze", "Azerbaijani", alpha2="az"),
    Language("kaz", "Kazakh", alpha2="kk"),
    Language("uzb", "Uzbek", alpha2="uz"),
    Language("mon", "Mongolian", alpha2="mn"),
    Language("ara", "Arabic", alpha2="ar"),
    Language("heb", "Hebrew", alpha2="he"),
    Language("fas", "Persian", alpha2="fa"),
    Language("urd", "Urdu", alpha2="ur"),
    Language("hin", "Hindi", alpha2="hi"),
    Language("ben", "Bengali", alpha2="bn"),
    Language("pan", "Punjabi", alpha2="pa"),
    Language("guj", "Gujarati", alpha2="gu"),
    Language("mar", "Marathi", alpha2="mr"),
    Language("nep", "Nepali", alpha2="ne"),
    Language("sin", "Sinhala", alpha2="si"),
    Language("tam", "Tamil", alpha2="ta"),
    Language("tel", "Telugu", alpha2="te"),
    Language("kan", "Kannada", alpha2="kn"),
    Language("mal", "Malayalam", alpha2="ml"),
    Language("kor", "Korean", alpha2="ko"),
    Language("vie", "Vietnamese", alpha2="vi"),
    Language("ind", "Indonesian", alpha2="id"),
    Language("msa", "Malay", alpha2="ms"),
    Language("tgl", "Tagalog", alpha2="tl"),
    Language("swa", "Swahili", alpha2="sw"),
    Language("amh", "Amharic", alpha2="am"),
    Language("som", "Somali", alpha2="so"),
    Language("hau", "Hausa", alpha2="ha"),
    Language("yor", "Yoruba", alpha2="yo"),
    Language("ibo", "Igbo", alpha2="ig"),
    Language("zul", "Zulu", alpha2="zu"),
    Language("xho", "Xhosa", alpha2="xh"),
    Language("afr", "Afrikaans", alpha2="af"),
    Language("mri", "Maori", alpha2="mi"),
    Language("haw", "Hawaiian"),
    Language("lat", "Latin", alpha2="la"),
    Language("epo", "Esperanto", alpha2="eo"),
    Language("yid", "Yiddish", alpha2="yi"),
)

_LOOKUP: dict[str, Language] = {}
for _entry in LANGUAGES.values():
    _LOOKUP[_entry.code] = _entry
    _LOOKUP[_entry.name.lower()] = _entry
    if _entry.alpha2:
        _LOOKUP.setdefault(_entry.alpha2, _entry)


class UnknownLanguage(ValueError):
    """A language code that is not in :data:`LANGUAGES`."""


def language(code: str) -> Language:
    """The table entry for an ISO 639-3 code, an ISO 639-1 code or an English name."""
    entry = _LOOKUP.get(code.strip().lower().replace("-", "_").split("_")[0]) if code.strip() else None
    if entry is None:
        entry = _LOOKUP.get(code.strip().lower())
    if entry is None:
        raise UnknownLanguage(f"unknown language {code!r} (use an ISO 639-3 code such as spa, fra, cmn, jpn)")
    return entry


def find_language(code: str) -> Language | None:
    """:func:`language`, or None for a code the table does not know."""
    try:
        return language(code)
    except UnknownLanguage:
        return None


def describe(target: Language, known: Language) -> str:
    """A course in words: "Spanish for English speakers"."""
    return f"{target.name} for {known.name} speakers"


# -- the text against its table entry ---------------------------------------------------------------

#: Unicode scripts written without spaces, by the first word of their characters' names.
_UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def unspaced_share(text: str) -> float:
    """Share of the letters of ``text`` that belong to a script written without spaces.

    >>> unspaced_share("我们不想"), unspaced_share("Quiero hablar")
    (1.0, 0.0)
    """
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    unspaced = sum(unicodedata.name(ch, "").startswith(_UNSPACED_SCRIPTS) for ch in letters)
    return unspaced / len(letters)


def script_contradiction(entry: Language, sentences: list[str]) -> str | None:
    """Why ``sentences`` (a course's seed texts) do not look like ``entry``'s script, or None.

    A language the table says is written without spaces whose sentences are mostly in a spaced
    script, or the reverse, is probably the wrong language code.

    >>> script_contradiction(language("spa"), ["我们不想让任何人听到真相。"])
    'the text is written in a script without spaces, but Spanish (spa) is written with spaces'
    >>> script_contradiction(language("cmn"), ["我们不想。"]) is None
    True
    """
    text = "".join(sentences)
    if not any(ch.isalpha() for ch in text):
        return None
    share = unspaced_share(text)
    if entry.spaced and share > 0.5:
        return f"the text is written in a script without spaces, but {entry.name} ({entry.code}) is written with spaces"
    if not entry.spaced and share < 0.5:
        return f"the text is written in a script with spaces, but {entry.name} ({entry.code}) is written without spaces"
    return None
