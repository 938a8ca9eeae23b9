"""``text.shown``: the one function every human-readable output passes outside values through."""

from __future__ import annotations

import pytest

from oktasync.text import SHOWN_LIMIT, shown


@pytest.mark.parametrize(("raw", "expected"), [
    ("\x1b[2J", "\\x1b[2J"),  # ESC: C0
    ("a\x00b\x07c", "a\\x00b\\x07c"),  # NUL, BEL
    ("line\nfake\r\tx", "line\\nfake\\r\\tx"),  # newline, carriage return, tab: as Python
    ("del\x7f", "del\\x7f"),  # DEL
    ("csi\x9b31m\x80\x9f", "csi\\x9b31m\\x80\\x9f"),  # C1, CSI among them
    ("\u202atxt\u202b\u202c\u202d\u202e", "\\u202atxt\\u202b\\u202c\\u202d\\u202e"),
    ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),  # bidi isolates
    ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),  # LRM, RLM, Arabic letter mark
    ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),  # line and paragraph separators
    ("lone\ud800", "lone\\ud800"),  # a lone surrogate cannot even be printed
])
def test_unsafe_characters_are_written_visibly(raw: str, expected: str) -> None:
    assert shown(raw) == expected


@pytest.mark.parametrize("text", [
    "Zoë Ångström", "山田 太郎", "عبد الله", "שלום", "👩‍💻 Dev", "R&D / Ops", "C:\\path", "",
])
def test_ordinary_text_is_shown_as_it_is(text: str) -> None:
    assert shown(text) == text


def test_non_text_values_are_shown_as_text() -> None:
    assert shown(42) == "42"
    assert shown(None) == "None"
    assert shown(ValueError("bad\x1b")) == "bad\\x1b"


def test_a_long_value_is_cut_in_the_middle_with_its_full_length() -> None:
    value = "head-" + "x" * 100_000 + "-tail"
    text = shown(value)
    assert len(text) < SHOWN_LIMIT + 40
    assert text.startswith("head-xxx") and text.endswith("xxx-tail")
    assert "…[100,010 characters]…" in text


def test_a_value_at_the_limit_is_kept_whole() -> None:
    assert shown("y" * SHOWN_LIMIT) == "y" * SHOWN_LIMIT
    assert "…" in shown("y" * (SHOWN_LIMIT + 1))


def test_shortening_never_splits_an_escape() -> None:
    text = shown("\x1b" * 10_000)
    assert "…[10,000 characters]…" in text
    head, tail = text.split("…[10,000 characters]…")
    assert head.replace("\\x1b", "") == "" and tail.replace("\\x1b", "") == ""
