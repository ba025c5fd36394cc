"""Text from outside (course files, model answers, API errors, paths) made safe to show.

A terminal acts on control characters: ESC starts sequences that set a window title, move the
cursor or rewrite what is on screen (OSC, CSI), a C1 byte such as U+009B does the same on some
terminals, and the bidi overrides (U+202A-U+202E, U+2066-U+2069) make a line display in another
order than it reads ("Trojan Source"). Anything phase5 prints that came from outside goes through
:func:`printable`, which writes such characters as visible escapes (``\\x1b``, ``\\u202e``), so
a line shows what the text holds and stays one line. Rich output shows such text as
``rich.text.Text`` (never as markup), so ``[/red]`` in an error is shown, not interpreted.

A phrase holding one of these characters is refused as an e-phrase (:func:`unsafe_character`):
no person writes them into a sentence, and a saved basket is shown on terminals and sent to models.

>>> printable("oops\\x1b]0;pwned\\x07 [red]x[/red]")
'oops\\\\x1b]0;pwned\\\\x07 [red]x[/red]'
>>> printable("a\\nb"), printable("a\\nb", keep_newlines=True)
('a\\\\nb', 'a\\nb')
>>> printable_json('"\u202e"') == '"\\\\u202e"'
True
>>> unsafe_character("I\\u202ewent"), unsafe_character("Él fue."), quote_id("S0001L01"), quote_id("S0001L01\\nX")
('a bidi control character U+202E', None, 'S0001L01', "'S0001L01\\\\nX'")
"""

from __future__ import annotations

import re
from typing import Any

#: Explicit directional embeddings, overrides and isolates: they reorder how a line is displayed.
#: (The marks U+200E/U+200F/U+061C only set the direction of neutral characters and are kept.)
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROL = "\x00-\x1f\x7f-\x9f"  # C0, DEL and C1
_LINE_BREAKS = "\u2028\u2029"  # line and paragraph separators: break a line like \n
_UNSHOWABLE = re.compile(f"[{_CONTROL}{_LINE_BREAKS}{BIDI_CONTROLS}]")
_UNSHOWABLE_KEEP_NEWLINES = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f{_LINE_BREAKS}{BIDI_CONTROLS}]")
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if match.group() == "\n":
        return "\\n"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: Any, keep_newlines: bool = False) -> str:
    """``text`` (anything: it is turned into a string) with control, line-separator and bidi
    control characters written as escapes. ``keep_newlines``: ``\\n`` stays a line break (text
    that is several lines by design, such as a status report)."""
    pattern = _UNSHOWABLE_KEEP_NEWLINES if keep_newlines else _UNSHOWABLE
    return pattern.sub(_escape, str(text))


_JSON_UNSHOWABLE = re.compile(f"[\x7f-\x9f{_LINE_BREAKS}{BIDI_CONTROLS}]")


def printable_json(text: str) -> str:
    """JSON text (as ``json.dumps(..., ensure_ascii=False)`` writes it) with the characters a
    terminal acts on written as ``\\uXXXX`` escapes: json escapes C0 controls itself, but not
    DEL, C1, line separators or bidi controls. The JSON means the same."""
    return _JSON_UNSHOWABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def unsafe_character(text: str) -> str | None:
    """What makes ``text`` unfit for a phrase: its first control, line-separator or bidi control
    character, named; None when it has none."""
    match = _UNSHOWABLE.search(text)
    if match is None:
        return None
    char = match.group()
    kind = "a bidi control character" if char in BIDI_CONTROLS else "a control character"
    return f"{kind} U+{ord(char):04X}"


def quote_id(value: Any) -> str:
    """An id (LEGO, seed, file) as a message shows it: as it is when it is a plain id, quoted
    with its special characters escaped otherwise, so that a message stays one readable line."""
    if isinstance(value, str) and _PLAIN_ID.match(value):
        return value
    return printable(repr(value))
