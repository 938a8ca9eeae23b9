"""Values from Okta and the targets, made safe to show on a terminal.

Logins, display names, e-mails, group names and server error bodies come from outside: an ESC
sequence in one can clear the screen or rewrite what is shown, a newline can start a fake
summary line, a text-direction control makes one name look like another, and a 100 KB value
floods the screen. Every human-readable output (the summary, the CLI's messages, the log
lines) passes what it shows through ``shown``; the CSV and JSON files keep every value in full.
"""

from __future__ import annotations

import re

# Characters of one value shown on a terminal: room for any message the engine writes around
# a value (two targets' guard notes are about 350), not for a 100 KB value inside one.
SHOWN_LIMIT = 500

# C0 controls (ESC, NUL, BEL, newline...), DEL and C1 controls (CSI U+009B is an escape
# sequence in one character); the Unicode text-direction controls (U+061C, U+200E/U+200F,
# U+202A-U+202E, U+2066-U+2069); line and paragraph separators, which some terminals and log
# viewers break lines at; lone surrogates, which cannot even be encoded for printing.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escaped(text: str) -> str:
    """``text`` with every unsafe character written visibly, as Python writes it: ``\\n``,
    ``\\x1b``, ``\\u202e``."""
    return _UNSAFE.sub(_escape_one, text)


def shown(value: object, limit: int = SHOWN_LIMIT) -> str:
    """A value as a terminal may show it: escaped, and when longer than ``limit`` characters
    cut in the middle with an ellipsis and its full length, so both ends stay readable.

    Cut before escaping: the note counts the value's own characters, and no escape is split.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        tail = limit // 5  # a shortened message keeps its end, which often says the most
        head = limit - tail
        text = f"{text[:head]}…[{len(text):,} characters]…{text[-tail:]}"
    return escaped(text)
