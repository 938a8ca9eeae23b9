"""How an Okta login becomes a target username: Java regexes and ``replaceFirst``.

Admins copy username rules from Java-based Okta connectors (miniOrange's among them), so the
pattern and its replacement keep their Java meaning: :func:`translate_java_regex` rewrites Java
syntax into Python's and refuses what Python would read differently; :class:`UsernameRule`
applies ``login.replaceFirst(regex, replacement)``, then NFC and lower case. This is domain
logic, not configuration parsing: the planner, the pipeline and the emulators' preloading use it,
and the configuration only reports its :class:`RuleError` messages under the setting's name.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["RuleError", "UsernameRule", "compile_java_regex", "translate_java_regex"]


class RuleError(ValueError):
    """What is wrong with a regex or a replacement, one message per problem.

    ``items`` pairs each message with the setting it is about (``"username_regex"``,
    ``"username_replacement"``, or ``""`` for a lone regex), so the configuration can name it.
    """

    def __init__(self, message: str = "", *, items: Iterable[tuple[str, str]] = ()) -> None:
        self.items = list(items) or [("", message)]
        super().__init__("; ".join(m for _, m in self.items))




# Java escapes Python cannot honour (or would honour with another meaning): refuse, name them.
_JAVA_ONLY_ESCAPES: Final = {
    "p": r"\p{...} (Unicode property class)",
    "P": r"\P{...} (negated Unicode property class)",
    "Q": r"\Q...\E (literal quoting; escape the characters instead)",
    "E": r"\E (end of literal quoting)",
    "G": r"\G (end of the previous match)",
    "h": r"\h (horizontal whitespace)",
    "H": r"\H (not horizontal whitespace)",
    "v": r"\v (Java: any vertical whitespace; Python: vertical tab only)",
    "V": r"\V (not vertical whitespace)",
    "R": r"\R (any linebreak)",
    "X": r"\X (grapheme cluster)",
    "c": r"\cX (control character)",
}
# Java escapes with a Python spelling, outside a character class: \z is Python's \Z, and Java's \Z
# ("end, before a final line terminator") is a lookahead.
_JAVA_ANCHORS: Final = {"z": r"\Z", "Z": r"(?=\n?\Z)", "e": r"\x1b"}


def translate_java_regex(pattern: str) -> str:
    """Rewrite a Java regex into Python syntax, or raise ValueError naming a Java-only construct.

    Admins copy these patterns from Java-based tools, so the Java meaning is the one to honour:
    ``(?<name>...)`` -> ``(?P<name>...)``, ``\\k<name>`` -> ``(?P=name)``, ``\\x{h..h}``,
    ``\\0oct``, ``\\e``, ``\\z``, ``\\Z``. Constructs Python would read differently or not at all
    (``\\p{..}``, ``\\Q..\\E``, ``\\G``, class unions and ``&&`` intersections, ...) are refused
    rather than silently changing what matches.
    """
    out: list[str] = []
    i, n, class_start = 0, len(pattern), -1
    while i < n:
        c = pattern[i]
        if c == "\\":
            text, i = _translate_escape(pattern, i, in_class=class_start >= 0)
            out.append(text)
            continue
        if class_start >= 0:
            if c == "]" and i > class_start:
                class_start = -1
            elif c == "[":
                raise RuleError("Java-only syntax: nested character class [a[b]] (class union)")
            elif pattern.startswith("&&", i):
                raise RuleError("Java-only syntax: character class intersection &&")
        elif c == "[":
            class_start = i + 2 if pattern.startswith("^", i + 1) else i + 1
        elif pattern.startswith("(?<", i) and pattern[i + 3 : i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _translate_escape(pattern: str, i: int, *, in_class: bool) -> tuple[str, int]:
    """Translate the escape (backslash) at ``pattern[i]``: its Python text and the next index."""
    d = pattern[i + 1 : i + 2]
    if d in _JAVA_ONLY_ESCAPES:
        raise RuleError(f"Java-only syntax Python cannot honour: {_JAVA_ONLY_ESCAPES[d]}")
    if d in _JAVA_ANCHORS and not in_class:
        return _JAVA_ANCHORS[d], i + 2
    if d == "x" and pattern.startswith("{", i + 2):
        end = pattern.find("}", i + 3)
        digits = pattern[i + 3 : end] if end > 0 else ""
        if not re.fullmatch(r"[0-9A-Fa-f]{1,6}", digits) or int(digits, 16) > 0x10FFFF:
            raise RuleError(r"malformed \x{...} escape")
        return f"\\U{int(digits, 16):08X}", end + 1
    if d == "0":
        octal = re.match(r"[0-3][0-7]{2}|[0-7]{1,2}", pattern[i + 2 : i + 5])
        if octal is None:
            raise RuleError(r"malformed octal escape: Java needs \0 followed by octal digits")
        return f"\\x{int(octal.group(), 8):02x}", i + 2 + octal.end()
    if d == "k" and pattern.startswith("<", i + 2):
        end = pattern.find(">", i + 3)
        if end < 0:
            raise RuleError(r"malformed \k<name> back reference")
        return f"(?P={pattern[i + 3 : end]})", end + 1
    return pattern[i : i + 2], i + 2


def compile_java_regex(pattern: str) -> re.Pattern[str]:
    """Translate (see :func:`translate_java_regex`) and compile; ValueError explains a failure.

    Warnings are errors here: Python's FutureWarning on ``[[``, ``--``, ``||`` inside a class
    flags exactly the places where a Java pattern would silently mean something else.
    """
    translated = translate_java_regex(pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return re.compile(translated)
        except re.error as exc:
            raise RuleError(f"does not compile: {exc}") from None
        except Warning as exc:
            raise RuleError(f"would not mean the same in Python as in Java: {exc}") from None


_Part = str | int  # a literal, or a group number
_Expand = Callable[[re.Match[str]], str]


def _parse_replacement(replacement: str, pattern: re.Pattern[str]) -> tuple[_Part, ...]:
    """Split a Java replacement (``$1``, ``${name}``, ``\\$``) into literals and group numbers.

    Follows ``Matcher.appendReplacement``: ``\\x`` is a literal ``x``; ``$`` plus digits takes
    as many digits as still name an existing group (``$12`` with one group is group 1, then "2");
    a reference to a group the regex lacks is an error here, where Java would fail at run time.
    """
    parts: list[_Part] = []
    problems: list[str] = []
    literal: list[str] = []
    i, n = 0, len(replacement)
    while i < n:
        c = replacement[i]
        if c == "\\" and i + 1 < n:
            literal.append(replacement[i + 1])
            i += 2
        elif c == "\\":
            problems.append("ends with a lone backslash: write \\\\ for a literal backslash")
            i += 1
        elif c == "$":
            try:
                group, i = _group_reference(replacement, i + 1, pattern)
            except RuleError as exc:
                problems.append(str(exc))
                i += 1
                continue
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(group)
        else:
            literal.append(c)
            i += 1
    if problems:
        raise RuleError(items=[("", p) for p in problems])
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def _group_reference(text: str, i: int, pattern: re.Pattern[str]) -> tuple[int, int]:
    """Parse the group reference after a ``$`` at ``text[i:]``: (group number, next index)."""
    groups = pattern.groups
    if text.startswith("{", i):
        end = text.find("}", i + 1)
        name = text[i + 1 : end] if end > 0 else ""
        if not name:
            raise RuleError("malformed ${name} reference")
        if name not in pattern.groupindex:
            raise RuleError(f"${{{name}}} refers to no group named {name!r} in username_regex")
        return pattern.groupindex[name], end + 1
    if i < len(text) and text[i].isascii() and text[i].isdigit():
        number = int(text[i])
        if number > groups:
            raise RuleError(f"${number} refers to group {number}, but username_regex has {groups}")
        i += 1
        while i < len(text) and text[i].isascii() and text[i].isdigit():
            longer = number * 10 + int(text[i])
            if longer > groups:
                break
            number, i = longer, i + 1
        return number, i
    raise RuleError("'$' must be followed by a group number or {name}; write \\$ for a literal '$'")


def _expander(parts: tuple[_Part, ...]) -> _Expand:
    """A function building the replacement text from a match, specialised for the common shapes."""
    if not parts:
        return lambda m: ""
    if len(parts) == 1:
        only = parts[0]
        if isinstance(only, str):
            return lambda m: only
        return lambda m: m.group(only) or ""
    return lambda m: "".join([p if isinstance(p, str) else (m.group(p) or "") for p in parts])


def _no_expand(match: re.Match[str]) -> str:
    return match.group(0)


@dataclass(frozen=True)
class UsernameRule:
    """How an Okta login becomes a target username (see sync-semantics "Who is who").

    ``regex`` is kept as written (Java syntax); it is translated and compiled once, here, because
    :meth:`apply` runs once per user per target, a million times on a large org. ``source`` is
    the profile field it starts from: the login, or the e-mail (``username_from = "email"``).
    """

    regex: str | None = None
    replacement: str = "$1"
    source: str = "login"
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _expand: _Expand = field(init=False, repr=False, compare=False, default=_no_expand)

    def __post_init__(self) -> None:
        if self.regex is None:
            return
        try:
            pattern = compile_java_regex(self.regex)
        except RuleError as exc:
            raise RuleError(items=[("username_regex", m) for _, m in exc.items]) from None
        try:
            parts = _parse_replacement(self.replacement, pattern)
        except RuleError as exc:
            raise RuleError(items=[("username_replacement", m) for _, m in exc.items]) from None
        object.__setattr__(self, "_pattern", pattern)
        object.__setattr__(self, "_expand", _expander(parts))

    def apply(self, login: str) -> str:
        """Java ``login.replaceFirst(regex, replacement)``, then NFC, then ``str.lower()``."""
        pattern = self._pattern
        if pattern is not None:
            match = pattern.search(login)
            if match is not None:
                login = login[: match.start()] + self._expand(match) + login[match.end() :]
        return unicodedata.normalize("NFC", login).lower()

    def username(self, login: str, email: str | None) -> str:
        """The username of an Okta user with this login and e-mail ("" without an e-mail when
        the rule starts from it: such a user is skipped and reported)."""
        return self.apply(email or "" if self.source == "email" else login)

