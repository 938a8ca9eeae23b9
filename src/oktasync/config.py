"""Load and validate the TOML configuration before anything runs.

Why so strict: a sync removes access (deactivations, membership removals), so a setting that is
misspelt, out of range or quietly ignored is a production incident in waiting. The loader therefore

* reports EVERY problem at once (an admin fixes the file in one pass, not one error per run), each
  naming its setting by path, e.g. ``app[0] (corp-okta).okta_url: https is required ...``;
* treats unknown keys as errors, with a "did you mean" hint;
* never puts a secret value in a message (secrets live in :class:`~oktasync.secrets.Secret`);
* resolves everything that can fail (environment variables, ``file:`` secrets, regexes,
  durations) now, so nothing surprises the engine at run time.

Validation is table-driven: each section is a mapping of key -> :class:`_Field` (parser and
default). Parsers return a valid value or raise :class:`_Invalid`; the loader records the problem
and carries on. The typed objects are only built once the whole file is clean.

Group-name collisions: at load time only collisions among ``group_rename`` values, and chains in
which a rename value is another entry's (renamed) Okta name, can be seen. Two in-scope Okta groups
that land on one target name at run time (say ``Eng`` and ``eng``, or a rename value equal to an
unrenamed Okta group) are detected by the planner when it reads the groups.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import math
import os
import re
import tomllib
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from oktasync.secrets import Secret, SecretError, resolve_secret

__all__ = [
    "ADOPT_MODES",
    "GROUP_TYPES",
    "TARGET_KINDS",
    "AppConfig",
    "Config",
    "ConfigError",
    "DeactivationLimit",
    "PipelineConfig",
    "TargetConfig",
    "UsernameRule",
    "compile_java_regex",
    "load_config",
    "parse_duration",
    "translate_java_regex",
]

GROUP_TYPES: Final = ("OKTA_GROUP", "APP_GROUP", "BUILT_IN")
ADOPT_MODES: Final = ("email-match", "always", "never")
TARGET_KINDS: Final = ("jira-dc", "confluence-dc")
USERNAME_SOURCES: Final = ("login", "email")
OKTA_CONCURRENCY_LIMIT: Final = 75  # Okta's per-org concurrent request limit
_NAME = re.compile(r"[A-Za-z0-9._-]+")


# --------------------------------------------------------------------------------------------
# errors


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason, one per line in str()."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class _Invalid(ValueError):
    """Problems with one value, as (path suffix, message) pairs; the suffix may be ``""``."""

    def __init__(self, message: str = "", *, items: Iterable[tuple[str, str]] = ()) -> None:
        self.items = list(items) or [("", message)]
        super().__init__("; ".join(f"{s}: {m}" if s else m for s, m in self.items))


# --------------------------------------------------------------------------------------------
# durations, regexes, username rule


_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_UNIT_SECONDS: Final = (86400, 3600, 60, 1)


def parse_duration(text: str) -> float:
    """Seconds in ``"30s"``, ``"15m"``, ``"1h"``, ``"1d"`` or a combination such as ``"1h30m"``.

    Units go from the largest to the smallest, each at most once, so that a typo like ``"1m1h"``
    is an error rather than a guess.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r} (use e.g. '30s', '15m', '1h', '1d', '1h30m')")
    amounts = (int(g) if g else 0 for g in match.groups())
    return float(sum(n * unit for n, unit in zip(amounts, _UNIT_SECONDS, strict=True)))


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
                raise _Invalid("Java-only syntax: nested character class [a[b]] (class union)")
            elif pattern.startswith("&&", i):
                raise _Invalid("Java-only syntax: character class intersection &&")
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
        raise _Invalid(f"Java-only syntax Python cannot honour: {_JAVA_ONLY_ESCAPES[d]}")
    if d in _JAVA_ANCHORS and not in_class:
        return _JAVA_ANCHORS[d], i + 2
    if d == "x" and pattern.startswith("{", i + 2):
        end = pattern.find("}", i + 3)
        digits = pattern[i + 3 : end] if end > 0 else ""
        if not re.fullmatch(r"[0-9A-Fa-f]{1,6}", digits) or int(digits, 16) > 0x10FFFF:
            raise _Invalid(r"malformed \x{...} escape")
        return f"\\U{int(digits, 16):08X}", end + 1
    if d == "0":
        octal = re.match(r"[0-3][0-7]{2}|[0-7]{1,2}", pattern[i + 2 : i + 5])
        if octal is None:
            raise _Invalid(r"malformed octal escape: Java needs \0 followed by octal digits")
        return f"\\x{int(octal.group(), 8):02x}", i + 2 + octal.end()
    if d == "k" and pattern.startswith("<", i + 2):
        end = pattern.find(">", i + 3)
        if end < 0:
            raise _Invalid(r"malformed \k<name> back reference")
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
            raise _Invalid(f"does not compile: {exc}") from None
        except Warning as exc:
            raise _Invalid(f"would not mean the same in Python as in Java: {exc}") from None


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
            except _Invalid as exc:
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
        raise _Invalid(items=[("", p) for p in problems])
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
            raise _Invalid("malformed ${name} reference")
        if name not in pattern.groupindex:
            raise _Invalid(f"${{{name}}} refers to no group named {name!r} in username_regex")
        return pattern.groupindex[name], end + 1
    if i < len(text) and text[i].isascii() and text[i].isdigit():
        number = int(text[i])
        if number > groups:
            raise _Invalid(f"${number} refers to group {number}, but username_regex has {groups}")
        i += 1
        while i < len(text) and text[i].isascii() and text[i].isdigit():
            longer = number * 10 + int(text[i])
            if longer > groups:
                break
            number, i = longer, i + 1
        return number, i
    raise _Invalid("'$' must be followed by a group number or {name}; write \\$ for a literal '$'")


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
        except _Invalid as exc:
            raise _Invalid(items=[(".username_regex", m) for _, m in exc.items]) from None
        try:
            parts = _parse_replacement(self.replacement, pattern)
        except _Invalid as exc:
            raise _Invalid(items=[(".username_replacement", m) for _, m in exc.items]) from None
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


# --------------------------------------------------------------------------------------------
# the typed configuration


@dataclass(frozen=True)
class DeactivationLimit:
    """A guard's limit: a fixed count, or a percentage of a base (``max_deactivations``: the
    users the app has synced; ``max_membership_removals``: their memberships in synced groups;
    ``max_listing_shrink``: what the same Okta listing returned in the last complete run)."""

    count: int | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.percent is None):
            raise ValueError("DeactivationLimit needs exactly one of count and percent")

    def allowed(self, synced_users: int) -> int:
        """How many deactivations one run may make (percentages round down)."""
        if self.count is not None:
            return self.count
        percent = self.percent or 0.0
        # round first so that float noise (0.29 * 100 = 28.999...) does not lose a whole user
        return math.floor(round(percent * synced_users / 100, 6))


@dataclass(frozen=True)
class TargetConfig:
    """One ``[target.X]``: a Jira or Confluence Data Center server and how to write to it."""

    name: str
    kind: str
    url: str
    token: Secret | None
    username: str | None
    password: Secret | None
    default_groups: tuple[str, ...]
    protected_users: frozenset[str]
    concurrency: int
    max_rps: float
    adopt_existing: str | None
    username_from: str
    username_rule: UsernameRule | None  # the target's own rule; None: the app's
    timeout_s: float


@dataclass(frozen=True)
class AppConfig:
    """One ``[[app]]``: an Okta org, what to sync from it and into which targets."""

    name: str
    okta_url: str
    okta_token: Secret
    username_rule: UsernameRule
    import_users: bool
    update_users: bool
    sync_user_status: bool
    deactivate_missing: bool
    remove_memberships: bool
    group_types: tuple[str, ...]
    group_include: tuple[re.Pattern[str], ...]
    group_exclude: tuple[re.Pattern[str], ...]
    group_rename: dict[str, str]
    max_deactivations: DeactivationLimit
    max_membership_removals: DeactivationLimit
    max_listing_shrink: DeactivationLimit
    schedule_s: float
    okta_max_share: float
    okta_concurrency: int
    targets: tuple[str, ...]
    adopt_existing: str

    def group_in_scope(self, name: str, type_: str) -> bool:
        """Type in ``group_types``, name fully matches an include and no exclude."""
        return (
            type_ in self.group_types
            and any(p.fullmatch(name) for p in self.group_include)
            and not any(p.fullmatch(name) for p in self.group_exclude)
        )

    def rule_for(self, target: TargetConfig) -> UsernameRule:
        """The username rule on one target: the target's own (its ``username_regex``, or
        ``username_from = "email"``), else the app's."""
        if target.username_rule is not None:
            return target.username_rule
        if target.username_from == "email":
            return UsernameRule(source="email")
        return self.username_rule

    def target_group_name(self, okta_name: str) -> str:
        """The group's name on the targets: its ``group_rename`` entry, or the Okta name."""
        return self.group_rename.get(okta_name, okta_name)

    def fingerprint(self, targets: Mapping[str, TargetConfig]) -> str:
        """SHA-256 over the settings that change what a sync plans to write.

        State and checkpoints record it, so a changed rule is noticed. Secrets, concurrency,
        rates, timeouts, schedule and guards are left out: they change how, not what. The Okta
        URL is in: another org is another source of truth.
        """
        doc = {
            "okta_url": self.okta_url,
            "regex": self.username_rule.regex,
            "replacement": self.username_rule.replacement if self.username_rule.regex else None,
            "switches": [
                self.import_users,
                self.update_users,
                self.sync_user_status,
                self.deactivate_missing,
                self.remove_memberships,
            ],
            "group_types": sorted(self.group_types),
            "include": sorted(p.pattern for p in self.group_include),
            "exclude": sorted(p.pattern for p in self.group_exclude),
            "rename": sorted(self.group_rename.items()),
            "adopt": self.adopt_existing,
            "targets": [_target_plan_settings(name, targets.get(name)) for name in self.targets],
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _target_plan_settings(name: str, target: TargetConfig | None) -> dict[str, Any]:
    """The part of a target's settings that shapes the plan (for :meth:`AppConfig.fingerprint`)."""
    if target is None:
        return {"name": name}
    return {
        "name": name,
        "kind": target.kind,
        "url": target.url,
        "default_groups": sorted(target.default_groups),
        "protected_users": sorted(target.protected_users),
        "adopt": target.adopt_existing,
        "username_from": target.username_from,
        "username_rule": None if target.username_rule is None else [
            target.username_rule.regex, target.username_rule.replacement],
    }


@dataclass(frozen=True)
class PipelineConfig:
    """``[pipeline]``: bounds on work queued and in flight across all targets."""

    queue_size: int
    max_in_flight: int


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: Path
    apps: tuple[AppConfig, ...]
    targets: dict[str, TargetConfig]
    state_dir: Path
    pipeline: PipelineConfig

    def app(self, name: str) -> AppConfig:
        """The app called ``name``; a ConfigError (not KeyError) that lists the apps otherwise."""
        for app in self.apps:
            if app.name == name:
                return app
        names = ", ".join(a.name for a in self.apps)
        raise ConfigError([f"--app: no app named {name!r} (apps: {names})"])


# --------------------------------------------------------------------------------------------
# value parsers: each returns a valid value or raises _Invalid


@dataclass(frozen=True)
class _Ctx:
    """What parsers need beyond the value: the environment and the config file's directory."""

    env: Mapping[str, str]
    base_dir: Path


_Parser = Callable[[object, _Ctx], Any]


def _shown(value: object) -> str:
    """A non-secret value for a message: arrays and tables by type, long text shortened."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _key_path(key: str) -> str:
    """``.key``, quoted as TOML would when the key is not bare."""
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", key)
    return f".{key}" if bare else "." + json.dumps(key, ensure_ascii=False)


def _p_bool(value: object, ctx: _Ctx) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {_shown(value)}")
    return value


def _p_int(lo: int, hi: int | None = None) -> _Parser:
    def parse(value: object, ctx: _Ctx) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
            raise _Invalid(f"must be an integer {span}, got {_shown(value)}")
        if value < lo:
            raise _Invalid(f"must be an integer >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise _Invalid(f"must be an integer <= {hi}, got {value}")
        return value

    return parse


def _p_float(lo: float, hi: float | None = None, *, lo_open: bool = False) -> _Parser:
    low = f"> {lo:g}" if lo_open else f">= {lo:g}"
    span = low if hi is None else f"{low} and <= {hi:g}"

    def parse(value: object, ctx: _Ctx) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"must be a number {span}, got {_shown(value)}")
        number = float(value)
        if (
            not math.isfinite(number)
            or number < lo
            or (lo_open and number == lo)
            or (hi is not None and number > hi)
        ):
            raise _Invalid(f"must be a number {span}, got {_shown(value)}")
        return number

    return parse


def _p_str(value: object, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string, got {_shown(value)}")
    return value


def _p_any_str(value: object, ctx: _Ctx) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {_shown(value)}")
    return value


def _p_choice(choices: tuple[str, ...]) -> _Parser:
    def parse(value: object, ctx: _Ctx) -> str:
        if not isinstance(value, str) or value not in choices:
            hint = _hint(value, choices) if isinstance(value, str) else ""
            allowed = ", ".join(repr(c) for c in choices)
            raise _Invalid(f"must be one of {allowed}, got {_shown(value)}{hint}")
        return value

    return parse


def _is_name(value: str) -> bool:
    return _NAME.fullmatch(value) is not None and value not in (".", "..")


def _p_name(value: object, ctx: _Ctx) -> str:
    """Names that become directory names: a safe character set, and never ``.`` or ``..``."""
    if not isinstance(value, str) or not _is_name(value):
        raise _Invalid(f"must match [A-Za-z0-9._-]+ (and not be . or ..), got {_shown(value)}")
    return value


def _p_list(item: _Parser, *, unique: bool = True, non_empty: bool = False) -> _Parser:
    def parse(value: object, ctx: _Ctx) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"must be an array, got {_shown(value)}")
        if non_empty and not value:
            raise _Invalid("must not be empty")
        items: list[Any] = []
        problems: list[tuple[str, str]] = []
        for index, raw in enumerate(value):
            try:
                parsed = item(raw, ctx)
            except _Invalid as exc:
                problems.extend((f"[{index}]{s}", m) for s, m in exc.items)
                continue
            if unique and raw in value[:index]:
                problems.append((f"[{index}]", f"{_shown(raw)} is listed twice"))
            items.append(parsed)
        if problems:
            raise _Invalid(items=problems)
        return tuple(items)

    return parse


def _p_regex(value: object, ctx: _Ctx) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise _Invalid(f"must be a regex string, got {_shown(value)}")
    return compile_java_regex(value)


def _p_str_map(value: object, ctx: _Ctx) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table of strings, got {_shown(value)}")
    problems = [
        (_key_path(k), f"must be a non-empty string, got {_shown(v)}")
        for k, v in value.items()
        if not isinstance(v, str) or not v.strip()
    ]
    problems += [("", "keys must not be empty")] if "" in value else []
    if problems:
        raise _Invalid(items=problems)
    return dict(value)


def _p_limit(value: object, ctx: _Ctx) -> DeactivationLimit:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return DeactivationLimit(count=value)
    if isinstance(value, str) and (m := re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*", value)):
        percent = float(m.group(1))
        if percent <= 100:
            return DeactivationLimit(percent=percent)
    raise _Invalid(f"must be a count >= 0 or a percentage '0%'..'100%', got {_shown(value)}")


def _p_duration(min_s: float, min_text: str) -> _Parser:
    def parse(value: object, ctx: _Ctx) -> float:
        if not isinstance(value, str):
            raise _Invalid(f"must be a duration string such as '1h', got {_shown(value)}")
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        if seconds < min_s:
            raise _Invalid(f"must be at least {min_text}, got {value!r}")
        return seconds

    return parse


def _p_secret(value: object, ctx: _Ctx) -> Secret:
    if not isinstance(value, str):
        # never show the value: it may be the secret itself, mistyped
        raise _Invalid("must be a string: ${VAR}, file:/path or the value itself")
    try:
        return resolve_secret(value, ctx.env, ctx.base_dir)
    except SecretError as exc:
        raise _Invalid(str(exc)) from None


def _p_path(value: object, ctx: _Ctx) -> Path:
    """A directory; relative paths resolve against the config file's directory, not the cwd."""
    text = _p_str(value, ctx)
    return (ctx.base_dir / Path(text).expanduser()).resolve()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(value: object, *, okta: bool) -> str:
    """An http(s) base URL, normalised without a trailing slash. The URL is never echoed."""
    if not isinstance(value, str):
        raise _Invalid(f"must be a URL string, got {_shown(value)}")
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise _Invalid("is not a valid URL") from None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise _Invalid("must be an absolute http(s) URL, such as https://example.com")
    if parts.username is not None or parts.password is not None:
        raise _Invalid("must not contain credentials: use the token settings")
    problems: list[str] = []
    if parts.scheme == "http" and not _is_loopback(host):
        problems.append("https is required except for loopback hosts")
    if parts.query or parts.fragment:
        problems.append("must not have a query or fragment")
    if okta and parts.path not in ("", "/"):
        problems.append("must not have a path: give the org URL, like https://example.okta.com")
    if okta and "-admin" in host:
        problems.append("is the Okta admin console, not the API: drop '-admin' from the host")
    if problems:
        raise _Invalid(items=[("", p) for p in problems])
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port is not None else ""
    path = "" if okta else parts.path.rstrip("/")
    return f"{parts.scheme}://{netloc}{path}"


def _p_okta_url(value: object, ctx: _Ctx) -> str:
    return _check_url(value, okta=True)


def _p_target_url(value: object, ctx: _Ctx) -> str:
    return _check_url(value, okta=False)


# --------------------------------------------------------------------------------------------
# the tables


_REQUIRED: Final = object()


@dataclass(frozen=True)
class _Field:
    """A setting: its parser and its default (``_REQUIRED`` when it has none)."""

    parse: _Parser
    default: Any = _REQUIRED
    parse_default: bool = False  # the default is raw text that needs the parser (paths)


_APP_FIELDS: Final = {
    "name": _Field(_p_name),
    "okta_url": _Field(_p_okta_url),
    "okta_token": _Field(_p_secret),
    "username_regex": _Field(_p_str, None),
    "username_replacement": _Field(_p_any_str, None),
    "import_users": _Field(_p_bool, True),
    "update_users": _Field(_p_bool, True),
    "sync_user_status": _Field(_p_bool, True),
    "deactivate_missing": _Field(_p_bool, False),
    "remove_memberships": _Field(_p_bool, True),
    "group_types": _Field(_p_list(_p_choice(GROUP_TYPES)), ("OKTA_GROUP", "APP_GROUP")),
    "group_include": _Field(_p_list(_p_regex), (re.compile(".*"),)),
    "group_exclude": _Field(_p_list(_p_regex), ()),
    "group_rename": _Field(_p_str_map, {}),
    "max_deactivations": _Field(_p_limit, DeactivationLimit(percent=10.0)),
    "max_membership_removals": _Field(_p_limit, DeactivationLimit(percent=10.0)),
    "max_listing_shrink": _Field(_p_limit, DeactivationLimit(percent=10.0)),
    "schedule": _Field(_p_duration(60, "1m"), 3600.0),
    "okta_max_share": _Field(_p_float(0, 1, lo_open=True), 0.5),
    "okta_concurrency": _Field(_p_int(1, OKTA_CONCURRENCY_LIMIT), 8),
    "targets": _Field(_p_list(_p_name, non_empty=True)),
    "adopt_existing": _Field(_p_choice(ADOPT_MODES), "email-match"),
}

_TARGET_FIELDS: Final = {
    "kind": _Field(_p_choice(TARGET_KINDS)),
    "url": _Field(_p_target_url),
    "token": _Field(_p_secret, None),
    "username": _Field(_p_str, None),
    "password": _Field(_p_secret, None),
    "default_groups": _Field(_p_list(_p_str), ()),
    "protected_users": _Field(_p_list(_p_str), ()),
    "concurrency": _Field(_p_int(1, 256), 16),
    "max_rps": _Field(_p_float(0), 0.0),
    "adopt_existing": _Field(_p_choice(ADOPT_MODES), None),
    "username_from": _Field(_p_choice(USERNAME_SOURCES), "login"),
    "username_regex": _Field(_p_str, None),
    "username_replacement": _Field(_p_any_str, None),
    "timeout_s": _Field(_p_float(0, lo_open=True), 60.0),
}

_STATE_FIELDS: Final = {"dir": _Field(_p_path, "var/oktasync", parse_default=True)}

_PIPELINE_FIELDS: Final = {
    "queue_size": _Field(_p_int(1, 1_000_000), 1000),
    "max_in_flight": _Field(_p_int(0), 0),
}

_TOP_KEYS: Final = ("app", "target", "state", "pipeline")


# --------------------------------------------------------------------------------------------
# the loader


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the configuration at ``path``; ConfigError lists all problems.

    ``env`` replaces ``os.environ`` for ``${VAR}`` secrets (tests, and callers that scrub it).
    """
    given = Path(path).expanduser()
    raw = _read_toml(given)
    config_path = given.resolve()
    ctx = _Ctx(env=os.environ if env is None else env, base_dir=config_path.parent)
    return _Loader(ctx).load(config_path, raw)


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; a missing, unreadable or malformed file is one problem naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such configuration file"]) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"{path}: cannot read the configuration file: {reason}"]) from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte offset {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages carry the position ("at line 3, column 14"), never the content
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def _join(where: str, key: str) -> str:
    return f"{where}{_key_path(key)}" if where else _key_path(key)[1:]


def _rename_problems(rename: dict[str, str]) -> list[tuple[str, str]]:
    """Collisions visible at load time among ``group_rename`` entries (see the module doc).

    Two values equal case-insensitively put two Okta groups into one target group. A value equal
    to another entry's key (a chain or swap, ``A -> B`` and ``B -> C``) hands the target group
    that used to mirror Okta ``B`` to Okta ``A``'s members: refused as well.
    """
    problems: list[tuple[str, str]] = []
    first_by_value: dict[str, str] = {}
    keys_by_lower: dict[str, list[str]] = {}
    for key in rename:
        keys_by_lower.setdefault(key.lower(), []).append(key)
    for key, value in rename.items():
        first = first_by_value.setdefault(value.lower(), key)
        if first != key:
            why = "two Okta groups cannot share one target group (compared case-insensitively)"
            problems.append((_key_path(key), f"renames to {value!r} like {first!r} does: {why}"))
        chained = [k for k in keys_by_lower.get(value.lower(), []) if k != key]
        if chained:
            why = "chained or swapped renames would hand its target group to others"
            problems.append(
                (_key_path(key), f"renames to {value!r}, which is renamed itself: {why}")
            )
    return problems


class _Loader:
    """Walks the raw TOML, records every problem, and builds the Config only when there is none."""

    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def load(self, path: Path, raw: dict[str, Any]) -> Config:
        self.unknown_keys(raw, _TOP_KEYS, "")
        targets = self.targets(raw.get("target", {}))
        apps = self.apps(raw.get("app"))
        state = self.section(raw.get("state", {}), _STATE_FIELDS, "state")
        pipeline = self.section(raw.get("pipeline", {}), _PIPELINE_FIELDS, "pipeline")
        self.check_app_targets(apps, targets)
        if self.problems:
            raise ConfigError(self.problems)
        return Config(
            path=path,
            apps=tuple(_build_app(values) for _, values in apps),
            targets={name: _build_target(name, values) for name, values in targets.items()},
            state_dir=state["dir"],
            pipeline=PipelineConfig(**pipeline),
        )

    def unknown_keys(self, table: dict[str, Any], known: Iterable[str], where: str) -> None:
        known = tuple(known)
        for key in table:
            if key not in known:
                self.problem(_join(where, key), f"unknown setting{_hint(key, known)}")

    def section(self, table: object, fields: Mapping[str, _Field], where: str) -> dict[str, Any]:
        """Parse one table by its field table; a failed or missing value becomes None."""
        if not isinstance(table, dict):
            self.problem(where, f"must be a table, got {_shown(table)}")
            table = {}
        self.unknown_keys(table, fields, where)
        values: dict[str, Any] = {}
        for key, spec in fields.items():
            values[key] = None
            if key not in table and spec.default is _REQUIRED:
                self.problem(_join(where, key), "is required")
                continue
            raw = table.get(key, spec.default)
            if key not in table and not spec.parse_default:
                values[key] = raw
                continue
            try:
                values[key] = spec.parse(raw, self.ctx)
            except _Invalid as exc:
                for suffix, message in exc.items:
                    self.problem(_join(where, key) + suffix, message)
        return values

    def apps(self, raw: object) -> list[tuple[str, dict[str, Any]]]:
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            self.problem("app", "must be an array of tables: write [[app]] sections")
            return []
        if not raw:
            self.problem("app", "at least one [[app]] is required")
        apps: list[tuple[str, dict[str, Any]]] = []
        for index, table in enumerate(raw):
            name = table.get("name")
            where = f"app[{index}] ({name})" if isinstance(name, str) and name else f"app[{index}]"
            values = self.section(table, _APP_FIELDS, where)
            values["username_rule"] = self.username_rule(table, values, where)
            values["named_targets"] = _named_targets(table.get("targets"))
            for suffix, message in _rename_problems(values["group_rename"] or {}):
                self.problem(f"{where}.group_rename{suffix}", message)
            apps.append((where, values))
        self.check_unique_names(apps)
        return apps

    def username_rule(self, table: dict[str, Any], values: dict[str, Any], where: str) -> Any:
        """An app's (or a target's own) UsernameRule; regex and replacement are checked
        together (the groups the replacement names exist)."""
        regex, replacement = values["username_regex"], values["username_replacement"]
        if "username_regex" not in table:
            if "username_replacement" in table:
                self.problem(f"{where}.username_replacement", "is set but username_regex is not")
            return UsernameRule()
        if regex is None or ("username_replacement" in table and replacement is None):
            return None  # already reported
        try:
            return UsernameRule(regex, "$1" if replacement is None else replacement)
        except _Invalid as exc:
            for suffix, message in exc.items:
                self.problem(where + suffix, message)
            return None

    def check_unique_names(self, apps: list[tuple[str, dict[str, Any]]]) -> None:
        """App names name state directories: unique, case-insensitively (macOS, Windows)."""
        seen: dict[str, str] = {}
        for where, values in apps:
            name = values["name"]
            if name is None:
                continue
            first = seen.setdefault(name.lower(), where)
            if first != where:
                self.problem(f"{where}.name", f"duplicates {first}: app names must be unique")

    def targets(self, raw: object) -> dict[str, dict[str, Any]]:
        if not isinstance(raw, dict):
            self.problem("target", "must be tables such as [target.jira]")
            return {}
        targets: dict[str, dict[str, Any]] = {}
        for name, table in raw.items():
            where = "target" + _key_path(name)
            targets[name] = {}
            if not isinstance(table, dict):
                self.problem(where, f"must be a table: write [target.{name}] with kind, url, ...")
                continue
            try:
                _p_name(name, self.ctx)
            except _Invalid as exc:
                self.problem(where, f"target name {exc}")
            targets[name] = values = self.section(table, _TARGET_FIELDS, where)
            rule = self.username_rule(table, values, where)
            if rule is not None and "username_regex" in table:
                rule = UsernameRule(rule.regex, rule.replacement,
                                    values["username_from"] or "login")
            values["username_rule"] = rule if "username_regex" in table else None
            self.check_credentials(table, where)
        return targets

    def check_credentials(self, table: dict[str, Any], where: str) -> None:
        """Exactly one way to authenticate: a token, or a username with its password."""
        has = {key for key in ("token", "username", "password") if key in table}
        if "token" in has and len(has) > 1:
            self.problem(where, "set either token, or username and password, not both")
        elif not has:
            self.problem(where, "needs credentials: token, or username and password")
        elif has == {"username"}:
            self.problem(f"{where}.password", "is required with username")
        elif has == {"password"}:
            self.problem(f"{where}.username", "is required with password")

    def check_app_targets(
        self, apps: list[tuple[str, dict[str, Any]]], targets: dict[str, dict[str, Any]]
    ) -> None:
        defined = ", ".join(sorted(targets)) or "none"
        for where, values in apps:
            for index, name in values["named_targets"]:
                if name not in targets:
                    self.problem(
                        f"{where}.targets[{index}]",
                        f"no [target.{name}] is defined (targets: {defined}){_hint(name, targets)}",
                    )


def _named_targets(raw: object) -> list[tuple[int, str]]:
    """(index, name) of the well-formed names in an app's raw ``targets``, for the existence
    check: it runs even when the list as a whole has another problem (a repeat, say)."""
    if not isinstance(raw, list):
        return []
    return [(i, t) for i, t in enumerate(raw) if isinstance(t, str) and _is_name(t)]


def _build_app(v: dict[str, Any]) -> AppConfig:
    return AppConfig(
        name=v["name"],
        okta_url=v["okta_url"],
        okta_token=v["okta_token"],
        username_rule=v["username_rule"],
        import_users=v["import_users"],
        update_users=v["update_users"],
        sync_user_status=v["sync_user_status"],
        deactivate_missing=v["deactivate_missing"],
        remove_memberships=v["remove_memberships"],
        group_types=tuple(v["group_types"]),
        group_include=tuple(v["group_include"]),
        group_exclude=tuple(v["group_exclude"]),
        group_rename=dict(v["group_rename"]),
        max_deactivations=v["max_deactivations"],
        max_membership_removals=v["max_membership_removals"],
        max_listing_shrink=v["max_listing_shrink"],
        schedule_s=v["schedule"],
        okta_max_share=v["okta_max_share"],
        okta_concurrency=v["okta_concurrency"],
        targets=tuple(v["targets"]),
        adopt_existing=v["adopt_existing"],
    )


def _build_target(name: str, v: dict[str, Any]) -> TargetConfig:
    return TargetConfig(
        name=name,
        kind=v["kind"],
        url=v["url"],
        token=v["token"],
        username=v["username"],
        password=v["password"],
        default_groups=tuple(v["default_groups"]),
        protected_users=frozenset(user.lower() for user in v["protected_users"]),
        concurrency=v["concurrency"],
        max_rps=float(v["max_rps"]),
        adopt_existing=v["adopt_existing"],
        username_from=v["username_from"],
        username_rule=v["username_rule"],
        timeout_s=float(v["timeout_s"]),
    )
