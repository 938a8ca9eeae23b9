"""The configuration file as pydantic models: each setting declared once, as a field.

A field says everything about its setting: its kind of value (checked here, and written into the
JSON Schema that editors read), its default (filled in by ``oktasync config check``) and its
description (the schema's documentation, the same words as ``config/example.toml``). The models
mirror the file exactly, key for key, so the schema is the file's; :mod:`oktasync.config` turns
a validated file into the engine's own objects.

Each kind of value is a small object (``_Int``, ``_Url``, ``_Secret``...) that gives pydantic
both the core schema (so the JSON Schema carries ranges, choices and patterns) and a check that
runs first and words the problem the way an administrator reads it: what was expected and what
was found, never a secret (``hide_input_in_errors`` keeps pydantic's own texts from showing one
either). A check raises :class:`pydantic_core.PydanticCustomError` of type ``oktasync`` whose
context holds ``problems``: (path suffix, message) pairs, so one value can report several
problems at once (a URL with plain http *and* a query).

Checks that span several settings (credentials, a username regex with its replacement, the
targets an app names, unique app names) are not here: :mod:`oktasync.config` runs them on the
raw tables even when some field failed, so one pass reports every problem.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError, core_schema

from oktasync.schedules import CRON, cron_problem, zone_problem
from oktasync.secrets import Secret, SecretError, resolve_secret
from oktasync.usernames import RuleError, compile_java_regex

__all__ = [
    "ADOPT_MODES",
    "APPS_MESSAGE",
    "GROUP_TYPES",
    "OKTA_CONCURRENCY_LIMIT",
    "SECTIONS",
    "TARGET_KINDS",
    "USERNAME_SOURCES",
    "VALUE_FIELD",
    "AppSettings",
    "AttributeGroupSettings",
    "ConfigFile",
    "PipelineSettings",
    "SecretSetting",
    "StateSettings",
    "TargetSettings",
    "ValidationContext",
    "hint",
    "is_name",
    "json_schema",
    "key_path",
    "parse_duration",
    "percent",
    "private_key_problem",
    "render_toml",
    "resolve_path",
    "shown",
    "toml_value",
]

GROUP_TYPES: Final = ("OKTA_GROUP", "APP_GROUP", "BUILT_IN")
ADOPT_MODES: Final = ("email-match", "always", "never")
CHANGE_MODES: Final = ("poll", "hooks", "both")
OKTA_AUTH_MODES: Final = ("token", "oauth")
TARGET_KINDS: Final = ("jira-dc", "confluence-dc", "atlassian-scim")
USERNAME_SOURCES: Final = ("login", "email")
OKTA_CONCURRENCY_LIMIT: Final = 75  # Okta's per-org concurrent request limit
NAME_PATTERN: Final = r"^[A-Za-z0-9._-]+$"
MASK: Final = "********"


@dataclass(frozen=True)
class ValidationContext:
    """What checks need beyond the value: the environment (``${VAR}`` secrets) and the config
    file's directory (relative ``file:`` secrets)."""

    env: Mapping[str, str]
    base_dir: Path


# --------------------------------------------------------------------------------------------
# words shared by the messages


def shown(value: object) -> str:
    """A non-secret value for a message: arrays and tables by type, long text shortened."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def hint(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def key_path(key: str) -> str:
    """``.key``, quoted as TOML would when the key is not bare."""
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", key)
    return f".{key}" if bare else "." + json.dumps(key, ensure_ascii=False)


def is_name(value: str) -> bool:
    """A name that becomes a directory name: a safe character set, never ``.`` or ``..``."""
    return re.fullmatch(NAME_PATTERN, value) is not None and value not in (".", "..")


def _fail(*problems: str | tuple[str, str]) -> PydanticCustomError:
    """The error a check raises: one or more problems, each a message or (suffix, message)."""
    items = [p if isinstance(p, tuple) else ("", p) for p in problems]
    return PydanticCustomError("oktasync", "; ".join(m for _, m in items), {"problems": items})


def _context(info: ValidationInfo) -> ValidationContext:
    context = info.context
    if not isinstance(context, ValidationContext):
        raise TypeError("settings are validated with a ValidationContext")  # a bug, not a user's
    return context


# --------------------------------------------------------------------------------------------
# kinds of value: each gives pydantic its core schema (hence the JSON Schema) and a check that
# words the problem; the check runs first, so pydantic's own type errors never reach a user


def _checked(check: Callable[[Any], Any], schema: core_schema.CoreSchema) -> core_schema.CoreSchema:
    return core_schema.no_info_before_validator_function(check, schema)


@dataclass(frozen=True)
class _Bool:
    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.bool_schema())

    @staticmethod
    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise _fail(f"must be true or false, got {shown(value)}")
        return value


@dataclass(frozen=True)
class _Int:
    lo: int
    hi: int | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.int_schema(ge=self.lo, le=self.hi))

    def check(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            span = f"from {self.lo} to {self.hi}" if self.hi is not None else f">= {self.lo}"
            raise _fail(f"must be an integer {span}, got {shown(value)}")
        if value < self.lo:
            raise _fail(f"must be an integer >= {self.lo}, got {value}")
        if self.hi is not None and value > self.hi:
            raise _fail(f"must be an integer <= {self.hi}, got {value}")
        return value


@dataclass(frozen=True)
class _Number:
    lo: float
    hi: float | None = None
    lo_open: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.float_schema(
            ge=None if self.lo_open else self.lo, gt=self.lo if self.lo_open else None,
            le=self.hi, allow_inf_nan=False))

    def check(self, value: object) -> float:
        low = f"> {self.lo:g}" if self.lo_open else f">= {self.lo:g}"
        span = low if self.hi is None else f"{low} and <= {self.hi:g}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(f"must be a number {span}, got {shown(value)}")
        number = float(value)
        if (not math.isfinite(number) or number < self.lo or (self.lo_open and number == self.lo)
                or (self.hi is not None and number > self.hi)):
            raise _fail(f"must be a number {span}, got {shown(value)}")
        return number


@dataclass(frozen=True)
class _Text:
    """A string; unless ``empty_ok``, one with something besides whitespace."""

    empty_ok: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.str_schema(
            pattern=None if self.empty_ok else r"\S"))

    def check(self, value: object) -> str:
        if self.empty_ok:
            if not isinstance(value, str):
                raise _fail(f"must be a string, got {shown(value)}")
            return value
        if not isinstance(value, str) or not value.strip():
            raise _fail(f"must be a non-empty string, got {shown(value)}")
        return value


@dataclass(frozen=True)
class _Choice:
    choices: tuple[str, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.literal_schema(list(self.choices)))

    def check(self, value: object) -> str:
        if not isinstance(value, str) or value not in self.choices:
            did_you_mean = hint(value, self.choices) if isinstance(value, str) else ""
            allowed = ", ".join(repr(c) for c in self.choices)
            raise _fail(f"must be one of {allowed}, got {shown(value)}{did_you_mean}")
        return value


@dataclass(frozen=True)
class _Name:
    """A name that names a directory or a section: app and target names."""

    prefix: str = ""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.str_schema(pattern=NAME_PATTERN))

    def check(self, value: object) -> str:
        if not isinstance(value, str) or not is_name(value):
            raise _fail(f"{self.prefix}must match [A-Za-z0-9._-]+ (and not be . or ..), "
                        f"got {shown(value)}")
        return value


@dataclass(frozen=True)
class _Regex:
    """A Java regex (see :mod:`oktasync.usernames`); kept as written, compiled to check it."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.str_schema())

    @staticmethod
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise _fail(f"must be a regex string, got {shown(value)}")
        try:
            compile_java_regex(value)
        except RuleError as exc:
            raise _fail(*(m for _, m in exc.items)) from None
        return value


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


@dataclass(frozen=True)
class _Duration:
    min_s: float
    min_text: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        pattern = r"^\s*([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?\s*$"
        return _checked(self.check, core_schema.str_schema(pattern=pattern))

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise _fail(f"must be a duration string such as '1h', got {shown(value)}")
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        if seconds < self.min_s:
            raise _fail(f"must be at least {self.min_text}, got {value!r}")
        return value


@dataclass(frozen=True)
class _Schedule:
    """A duration of at least a minute, or ``cron:`` and a five-field cron expression."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.str_schema())

    def check(self, value: object) -> str:
        if isinstance(value, str) and value.startswith(CRON):
            problem = cron_problem(value)
            if problem is not None:
                raise _fail(problem)
            return value
        return _Duration(60, "1m").check(value)


@dataclass(frozen=True)
class _Zone:
    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.str_schema())

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise _fail(f"must be a time zone name such as 'Europe/Berlin', got {shown(value)}")
        problem = zone_problem(value)
        if problem is not None:
            raise _fail(problem)
        return value


@dataclass(frozen=True)
class _Date:
    """A calendar date, ``YYYY-MM-DD``."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.str_schema(
            pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))

    def check(self, value: object) -> str:
        try:
            if not isinstance(value, str):
                raise ValueError
            date.fromisoformat(value)
        except ValueError:
            raise _fail(f"must be a date, YYYY-MM-DD, got {shown(value)}") from None
        return value


@dataclass(frozen=True)
class _Listen:
    """``HOST:PORT``: a host name or address, and a port 1 to 65535."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.str_schema(pattern=r"^.+:[0-9]+$"))

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise _fail(f"must be HOST:PORT such as '127.0.0.1:8787', got {shown(value)}")
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise _fail(f"must be HOST:PORT with a port 1 to 65535, got {value!r}")
        return value


_PERCENT = r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$"


def percent(text: str) -> float:
    """The number in a percentage such as ``"2.5%"`` (already matched against ``_PERCENT``)."""
    return float(text.strip().rstrip("%"))


@dataclass(frozen=True)
class _Limit:
    """A guard's limit: a count (integer >= 0) or a percentage from "0%" to "100%"."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.union_schema([
            core_schema.int_schema(ge=0), core_schema.str_schema(pattern=_PERCENT)]))

    @staticmethod
    def check(value: object) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and re.fullmatch(_PERCENT, value) and percent(value) <= 100:
            return value
        raise _fail(f"must be a count >= 0 or a percentage '0%'..'100%', got {shown(value)}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class _Url:
    """An http(s) base URL, normalised without a trailing slash; never echoed in a message
    (a URL may carry credentials)."""

    okta: bool

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        pattern = r"^https?://[^/?#]+/?$" if self.okta else r"^https?://[^?#]+$"
        return _checked(self.check, core_schema.str_schema(pattern=pattern))

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise _fail(f"must be a URL string, got {shown(value)}")
        try:
            parts = urlsplit(value.strip())
            port = parts.port
        except ValueError:
            raise _fail("is not a valid URL") from None
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise _fail("must be an absolute http(s) URL, such as https://example.com")
        if parts.username is not None or parts.password is not None:
            raise _fail("must not contain credentials: use the token settings")
        problems: list[str] = []
        if parts.scheme == "http" and not _is_loopback(host):
            problems.append("https is required except for loopback hosts")
        if parts.query or parts.fragment:
            problems.append("must not have a query or fragment")
        if self.okta and parts.path not in ("", "/"):
            problems.append("must not have a path: give the org URL, like https://example.okta.com")
        if self.okta and "-admin" in host:
            problems.append("is the Okta admin console, not the API: drop '-admin' from the host")
        if problems:
            raise _fail(*problems)
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{port}" if port is not None else ""
        path = "" if self.okta else parts.path.rstrip("/")
        return f"{parts.scheme}://{netloc}{path}"


@dataclass(frozen=True)
class _Array:
    """An array of values of one kind; ``unique``: no value twice; ``non_empty``."""

    unique: bool = True
    non_empty: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        inner = core_schema.no_info_after_validator_function(self.check_repeats, handler(source))
        return _checked(self.check, inner)

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> Any:
        json_schema = handler(schema)
        return {**json_schema, "uniqueItems": self.unique} | (
            {"minItems": 1} if self.non_empty else {})

    def check(self, value: object) -> list[Any]:
        if not isinstance(value, list):
            raise _fail(f"must be an array, got {shown(value)}")
        if self.non_empty and not value:
            raise _fail("must not be empty")
        return value

    def check_repeats(self, value: tuple[Any, ...]) -> tuple[Any, ...]:
        repeats = [(f"[{i}]", f"{shown(v)} is listed twice")
                   for i, v in enumerate(value) if self.unique and v in value[:i]]
        if repeats:
            raise _fail(*repeats)
        return value


@dataclass(frozen=True)
class _Renames:
    """``group_rename``: Okta group name -> target group name, with the collisions that can be
    seen in the file refused (two values equal case-insensitively put two Okta groups into one
    target group; a value equal to another entry's key, a chain or swap ``A -> B``, ``B -> C``,
    hands the target group that mirrored Okta ``B`` to Okta ``A``'s members). Two in-scope Okta
    groups landing on one name at run time (``Eng`` and ``eng``, or a value equal to a group
    that is not renamed) are the planner's to detect, when it reads the groups."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, handler(source))

    def check(self, value: object) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _fail(f"must be a table of strings, got {shown(value)}")
        problems = [(key_path(k), f"must be a non-empty string, got {shown(v)}")
                    for k, v in value.items() if not isinstance(v, str) or not v.strip()]
        problems += [("", "keys must not be empty")] if "" in value else []
        if problems:
            raise _fail(*problems)
        problems = self.collisions(value)
        if problems:
            raise _fail(*problems)
        return value

    @staticmethod
    def collisions(rename: dict[str, str]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        first_by_value: dict[str, str] = {}
        keys_by_lower: dict[str, list[str]] = {}
        for key in rename:
            keys_by_lower.setdefault(key.lower(), []).append(key)
        for key, value in rename.items():
            first = first_by_value.setdefault(value.lower(), key)
            if first != key:
                why = "two Okta groups cannot share one target group (compared case-insensitively)"
                problems.append((key_path(key), f"renames to {value!r} like {first!r} does: {why}"))
            if [k for k in keys_by_lower.get(value.lower(), []) if k != key]:
                why = "chained or swapped renames would hand its target group to others"
                problems.append(
                    (key_path(key), f"renames to {value!r}, which is renamed itself: {why}"))
        return problems


ATTRIBUTE_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_]*$"  # Okta profile attribute variable names
VALUE_FIELD: Final = "{value}"


class AttributeGroupSettings(BaseModel):
    """One entry of ``attribute_groups``: a profile attribute whose values name groups."""

    model_config = ConfigDict(title="attribute group", extra="forbid", frozen=True,
                              hide_input_in_errors=True)
    attribute: str = Field(pattern=ATTRIBUTE_PATTERN, description=(
        'The Okta profile attribute, as Okta names it (case-sensitive), e.g. "department", '
        '"location", "costCenter" or a custom attribute.'))
    group: str = Field(pattern=r"\{value\}", description=(
        'The group name: "{value}" is replaced by the attribute\'s value (trimmed).'))
    values: tuple[str, ...] | None = Field(default=None, description=(
        "Optional allow-list: only these values make a group (compared case-insensitively)."))
    map: dict[str, str] = Field(default_factory=dict, description=(
        "Value -> group name, used as is instead of the group template (compared "
        "case-insensitively)."))


@dataclass(frozen=True)
class _AttributeGroups:
    """``attribute_groups``: each entry checked here, so every problem is worded for an
    administrator (and reported at once, by path) before pydantic builds the entries."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, handler(source))

    def check(self, value: object) -> object:
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise _fail("must be an array of tables, e.g. "
                        '[{ attribute = "department", group = "dept-{value}" }]')
        problems: list[tuple[str, str]] = []
        first_by_attribute: dict[str, int] = {}
        for index, entry in enumerate(value):
            problems += [(f"[{index}]{s}", m) for s, m in self.entry_problems(entry)]
            attribute = entry.get("attribute")
            if isinstance(attribute, str):
                first = first_by_attribute.setdefault(attribute, index)
                if first != index:
                    problems.append((f"[{index}].attribute", f"{attribute!r} is listed twice "
                                     f"(first in [{first}]): one entry per attribute"))
        if problems:
            raise _fail(*problems)
        return value

    @staticmethod
    def entry_problems(entry: dict[str, Any]) -> list[tuple[str, str]]:
        known = AttributeGroupSettings.model_fields
        problems = [(key_path(k), "unknown setting" + hint(k, known))
                    for k in entry if k not in known]
        attribute, group = entry.get("attribute"), entry.get("group")
        if "attribute" not in entry:
            problems.append((".attribute", "is required"))
        elif not isinstance(attribute, str) or not re.fullmatch(ATTRIBUTE_PATTERN, attribute):
            problems.append((".attribute", "must be an Okta profile attribute name such as "
                             f"\"department\" (a letter, then letters, digits or _), got "
                             f"{shown(attribute)}"))
        if "group" not in entry:
            problems.append((".group", "is required"))
        elif not isinstance(group, str) or VALUE_FIELD not in group:
            problems.append((".group", 'must be a string containing "{value}" (where the '
                             f"attribute's value goes), got {shown(group)}"))
        problems += _value_list_problems(entry.get("values", []))
        problems += _value_map_problems(entry.get("map", {}))
        return problems


def _value_list_problems(values: object) -> list[tuple[str, str]]:
    if not isinstance(values, list):
        return [(".values", f"must be an array of strings, got {shown(values)}")]
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            problems.append((f".values[{index}]", f"must be a non-empty string, got {shown(v)}"))
        elif v.strip().lower() in seen:
            problems.append((f".values[{index}]", f"{shown(v)} is listed twice (values are "
                             "compared case-insensitively)"))
        else:
            seen.add(v.strip().lower())
    return problems


def _value_map_problems(mapping: object) -> list[tuple[str, str]]:
    if not isinstance(mapping, dict):
        return [(".map", f"must be a table of value = group name, got {shown(mapping)}")]
    problems = [(".map" + key_path(k), f"must be a non-empty string, got {shown(v)}")
                for k, v in mapping.items() if not isinstance(v, str) or not v.strip()]
    seen: set[str] = set()
    for k in mapping:
        if not k.strip():
            problems.append((".map", "keys must not be empty"))
        elif k.strip().lower() in seen:
            problems.append((".map" + key_path(k), "is listed twice (values are compared "
                             "case-insensitively)"))
        seen.add(k.strip().lower())
    return problems


@dataclass(frozen=True)
class _Table:
    """A section that must be a TOML table; ``message`` says how to write it."""

    message: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, handler(source))

    def check(self, value: object) -> object:
        if not isinstance(value, dict):
            raise _fail(self.message.format(got=shown(value)))
        return value


@dataclass(frozen=True)
class _Apps:
    """``[[app]]`` sections: an array of tables, at least one."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> Any:
        return {**handler(schema), "minItems": 1}

    @staticmethod
    def check(value: object) -> object:
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise _fail(APPS_MESSAGE)
        if not value:
            raise _fail("at least one [[app]] is required")
        return value


APPS_MESSAGE: Final = "must be an array of tables: write [[app]] sections"


class SecretSetting:
    """A secret setting: where it comes from as written (``${VAR}``, ``file:...`` or the value
    itself) and the resolved :class:`Secret`. Every textual form is masked."""

    __slots__ = ("reference", "secret")

    def __init__(self, reference: str, secret: Secret) -> None:
        self.reference = reference
        self.secret = secret

    def source(self) -> str:
        """Where the value came from, safe to print: the reference, never a literal value."""
        if self.reference.startswith(("${", "file:")):
            return f"from {self.reference}"
        return "written in the file"

    def __repr__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretSetting):
            return NotImplemented
        return self.secret == other.secret

    def __hash__(self) -> int:
        return hash(self.secret)



@dataclass(frozen=True)
class _Secret:
    """A secret setting, resolved now (see :func:`oktasync.secrets.resolve_secret`)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.with_info_plain_validator_function(self.resolve)

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> Any:
        return {"type": "string", "pattern": r"\S"}

    @staticmethod
    def resolve(value: object, info: ValidationInfo) -> SecretSetting:
        if isinstance(value, SecretSetting):
            return value
        if not isinstance(value, str):
            # never show the value: it may be the secret itself, mistyped
            raise _fail("must be a string: ${VAR}, file:/path or the value itself")
        context = _context(info)
        try:
            return SecretSetting(value, resolve_secret(value, context.env, context.base_dir))
        except SecretError as exc:
            raise _fail(str(exc)) from None


@dataclass(frozen=True)
class _PrivateKey(_Secret):
    """An OAuth private key (PEM, RSA or EC), resolved and parsed now: a key that cannot sign
    is a configuration problem, found before any request (its text is never shown)."""

    @staticmethod
    def resolve(value: object, info: ValidationInfo) -> SecretSetting:
        setting = _Secret.resolve(value, info)
        problem = private_key_problem(setting.secret.reveal())
        if problem is not None:
            raise _fail(problem)
        return setting


def private_key_problem(pem: str) -> str | None:
    """Why ``pem`` is not a private key the Okta token endpoint can take, or None."""
    # imported on use: most configurations hold no key, and cryptography costs ~50 ms to load
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if "PRIVATE KEY-----" not in pem:
        return ("is not a PEM private key (expected a -----BEGIN PRIVATE KEY----- block, "
                "RSA or EC)")
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        return "is an encrypted private key: give the key unencrypted (and keep its file 0600)"
    except (ValueError, UnsupportedAlgorithm):
        return "is not a readable PEM private key (RSA or EC)"
    if isinstance(key, rsa.RSAPrivateKey):
        return None if key.key_size >= 2048 else "is an RSA key shorter than 2048 bits"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name in ("secp256r1", "secp384r1", "secp521r1"):
            return None
        return f"is an EC key on {key.curve.name}: Okta takes P-256, P-384 or P-521"
    return "is neither an RSA nor an EC key (Okta signs with RS256..512 or ES256..512)"


@dataclass(frozen=True)
class _PemFile:
    """A path to a PEM file (relative to the config file's directory), checked now: a CA
    bundle that holds certificates, a certificate, or a private key (its content never
    shown)."""

    kind: str  # "ca", "cert" or "key"

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.with_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> Any:
        return {"type": "string", "pattern": r"\S"}

    def check(self, value: object, info: ValidationInfo) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _fail(f"must be the path of a PEM file, got {shown(value)}")
        path = resolve_path(value, _context(info).base_dir)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
        except UnicodeDecodeError:
            raise _fail(f"{path} is not a PEM (text) file") from None
        marker = {"ca": "CERTIFICATE-----", "cert": "CERTIFICATE-----",
                  "key": "PRIVATE KEY-----"}[self.kind]
        if marker not in text:
            what = {"ca": "CA certificates", "cert": "a certificate",
                    "key": "a private key"}[self.kind]
            raise _fail(f"{path} holds no PEM {what} (-----BEGIN {marker[:-5]}-----)")
        if self.kind == "ca":
            try:
                ssl.create_default_context(cafile=str(path))
            except ssl.SSLError as exc:
                raise _fail(f"{path}: its certificates cannot be read ({exc.reason})") from None
        return value


def resolve_path(value: str, base_dir: Path) -> Path:
    """A path setting as the engine opens it: ``~`` expanded, relative to the config file."""
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else base_dir / path


@dataclass(frozen=True)
class _Proxy:
    """A forward proxy's URL: http(s)://host[:port], without credentials (those go in the
    ``proxy_username`` / ``proxy_password`` settings, a secret), path or query."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return _checked(self.check, core_schema.str_schema(pattern=r"^https?://[^/?#@]+/?$"))

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise _fail(f"must be a URL string such as 'http://proxy.example.com:3128', "
                        f"got {shown(value)}")
        try:
            parts = urlsplit(value.strip())
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise _fail("is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _fail("must be http://HOST:PORT (or https://), such as "
                        "http://proxy.example.com:3128")
        if parts.username is not None or parts.password is not None:
            raise _fail("must not contain credentials: set proxy_username and proxy_password "
                        "(a secret) instead")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise _fail("must not have a path, query or fragment: http://HOST:PORT")
        return value.strip().rstrip("/")


# --------------------------------------------------------------------------------------------
# the file

SECRET_FORMS: Final = ('"${NAME}" (an environment variable), "file:/path" (a file\'s content, '
                       "stripped; relative to the config file's directory) or the value itself")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True,
                              arbitrary_types_allowed=True)


Bool = Annotated[bool, _Bool()]
Guard = Annotated[int | str, _Limit()]
AdoptMode = Annotated[str, _Choice(ADOPT_MODES)]
Regexes = Annotated[tuple[Annotated[str, _Regex()], ...], _Array()]
Strings = Annotated[tuple[Annotated[str, _Text()], ...], _Array()]


class AppSettings(_Section):
    """One ``[[app]]``: an Okta org, what to sync from it and into which targets."""

    model_config = ConfigDict(title="[[app]]", json_schema_extra={
        "dependentRequired": {"username_replacement": ["username_regex"]}})
    name: Annotated[str, _Name()] = Field(description=(
        "Unique across apps (case-insensitively); characters A-Z a-z 0-9 . _ - only. It names "
        "the app's state sub-directory and is what `--app NAME` selects."))
    okta_url: Annotated[str, _Url(okta=True)] = Field(description=(
        "The Okta org URL, no path or query. https is required except for loopback hosts "
        '(127.0.0.0/8, ::1, localhost). Not the admin console: "example-admin.okta.com" is '
        "refused."))
    okta_auth: Annotated[str, _Choice(OKTA_AUTH_MODES)] = Field(default="token", description=(
        '"token": an API token (okta_token). "oauth": an OAuth 2.0 service app (okta_client_id '
        "and okta_private_key; Okta's recommendation for machines: the app is not tied to an "
        "admin's account). oktasync asks for the scopes okta.users.read, okta.groups.read and "
        "okta.logs.read (incremental syncs and serve read the System Log), plus okta.apps.read "
        "where an okta_app_id is set; grant them to the app in Okta (Okta API Scopes). DPoP is "
        "used when the app requires it."))
    okta_token: Annotated[SecretSetting | None, _Secret()] = Field(default=None, description=(
        "An Okta API token (SSWS) with read access to users and groups; required when "
        f'okta_auth = "token": {SECRET_FORMS}.'))
    okta_client_id: Annotated[str | None, _Text()] = Field(default=None, description=(
        'The service app\'s client id (0oa...); required when okta_auth = "oauth".'))
    okta_private_key: Annotated[SecretSetting | None, _PrivateKey()] = Field(
        default=None, description=(
            "The service app's private key, PEM, RSA (2048 bits or more) or EC (P-256, P-384, "
            'P-521), unencrypted; required when okta_auth = "oauth". Usually '
            '"file:/etc/oktasync/okta-key.pem" (mode 0600). ' + SECRET_FORMS + "."))
    okta_key_id: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. Default: none. The key's id (kid) as Okta shows it on the app, sent in the "
        "client assertion's header; needed when the app has several keys."))
    okta_proxy: Annotated[str | None, _Proxy()] = Field(default=None, description=(
        "Optional. Default: the HTTPS_PROXY / HTTP_PROXY environment variables (honouring "
        "NO_PROXY), else none. A forward proxy for the requests to Okta, http://HOST:PORT; "
        "https stays end to end (CONNECT)."))
    okta_proxy_username: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. The proxy's user, with okta_proxy_password (Basic authentication)."))
    okta_proxy_password: Annotated[SecretSetting | None, _Secret()] = Field(
        default=None, description=(f"The password of okta_proxy_username: {SECRET_FORMS}."))
    okta_ca_bundle: Annotated[str | None, _PemFile("ca")] = Field(default=None, description=(
        "Optional. Default: none, the system's trust store alone. A PEM file of CA "
        "certificates trusted for Okta in addition to the system's (for a TLS-inspecting "
        "proxy). Relative paths are taken against this file's directory. Certificate "
        "verification cannot be switched off."))
    username_regex: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. Default: none, the target username is the Okta login itself. A Java regex "
        "applied to "
        "the Okta login like Java's String.replaceFirst: the first match is replaced by "
        "username_replacement and the rest of the login is kept; a login it does not match keeps "
        "its value. The result is then Unicode-NFC normalised and lower-cased."))
    username_replacement: Annotated[str | None, _Text(empty_ok=True)] = Field(
        default=None, description=(
        'Default "$1" when username_regex is set (an error without username_regex). "$n" is '
        'group n, "${name}" the named group (?<name>...); both must exist in the regex. "\\$" is '
        'a literal dollar, "\\\\" a literal backslash (in TOML basic strings write "\\\\$").'))
    import_users: Bool = Field(default=True, description=(
        "Create every active Okta user missing from a target."))
    update_users: Bool = Field(default=True, description=(
        "Keep display name and e-mail of synced users in line with Okta."))
    sync_user_status: Bool = Field(default=True, description=(
        "Deactivate a synced target user whose Okta user is not active; re-activate one whose "
        "Okta user is active again."))
    deactivate_missing: Bool = Field(default=False, description=(
        "Also deactivate target accounts that no Okta user maps to (never the protected_users, "
        "never accounts another app owns)."))
    remove_memberships: Bool = Field(default=True, description=(
        "Remove a synced user from an in-scope group that Okta no longer has it in. Memberships "
        "in out-of-scope groups and in default_groups are never removed."))
    group_types: Annotated[tuple[Annotated[str, _Choice(GROUP_TYPES)], ...], _Array()] = Field(
        default=("OKTA_GROUP", "APP_GROUP"), description=(
            'Okta group types in scope: any of OKTA_GROUP, APP_GROUP, BUILT_IN (the built-in '
            '"Everyone" group).'))
    group_include: Regexes = Field(default=(".*",), description=(
        "Java regexes; a group is in scope when its whole name matches one."))
    group_exclude: Regexes = Field(default=(), description=(
        "Java regexes; a group whose whole name matches one is out of scope."))
    group_rename: Annotated[dict[str, str], _Renames()] = Field(
        default_factory=dict, description=(
            "Okta group name -> target group name; other groups keep their names. Two entries "
            "landing on one target name (compared case-insensitively) are an error, and so is a "
            'chain or swap ("A" -> "B" with "B" -> "C"). Collisions with Okta groups that are '
            "not renamed can only be seen at run time, where they are reported as configuration "
            "errors too."))
    attribute_groups: Annotated[tuple[AttributeGroupSettings, ...], _AttributeGroups()] = Field(
        default=(), description=(
            "Groups made from Okta profile attributes: each entry's attribute (e.g. "
            '"department", "location", "costCenter" or any profile attribute) makes, for each '
            'value a user has, the group named by its group template ("{value}" is the value, '
            "trimmed); an absent, empty or non-string value makes no group. values: an optional "
            "allow-list (only these values make a group). map: value -> group name, used as is "
            "(not through the template). Values are compared case-insensitively (two spellings "
            "are one group). The names then go through group_exclude and group_rename like Okta "
            "group names (group_include and group_types do not apply). Such groups are created, "
            "their memberships added and removed like those of in-scope Okta groups; one landing "
            "on the target name of an in-scope Okta group, or of another attribute's group, is "
            "a configuration error reported at run time."))
    user_filter: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. Default: none, every user may get an account. Who gets an account: an Okta "
        'search expression (e.g. \'profile.department eq "Engineering"\'), sent to Okta and '
        "evaluated there (Okta's search is eventually consistent: a user changed seconds ago "
        "may be judged by its previous profile until the next run). A synced user who no "
        "longer matches is deactivated like a deactivated Okta user; one who never matched "
        "gets no account. A target may override it."))
    required_groups: Strings = Field(default=(), description=(
        "Optional. Default: none. Who gets an account: a user must be in at least one of these "
        "Okta groups (by name, exactly as Okta spells it; the groups need not be in the "
        "sync's group scope). A name Okta does not know stops the run with a configuration "
        "error. Combined with user_filter and okta_app_id: a user must pass each one set. A "
        "target may override it."))
    okta_app_id: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. Default: none. Who gets an account: only users assigned to this Okta app "
        "instance (its id, 0oa..., from the app's URL in the Okta admin console; direct "
        "assignments, as /api/v1/apps/{id}/users lists them). A target may override it."))
    max_deactivations: Guard = Field(default="10%", description=(
        "Safety guard: a run that would deactivate more than this writes no deactivation and "
        "exits 3 unless forced. A count (integer >= 0) or a percentage of the app's synced "
        'users, "0%" to "100%" (decimals allowed, e.g. "2.5%"; rounded down).'))
    max_membership_removals: Guard = Field(default="10%", description=(
        "Safety guard for membership removals, like max_deactivations: a run that would remove "
        "more memberships than this writes no removal at all and exits 3 unless forced. A count, "
        "or a percentage of the memberships the app's synced users hold in in-scope groups on "
        "a target."))
    max_listing_shrink: Guard = Field(default="10%", description=(
        "Safety guard against a listing that ended early without an error: when Okta returns "
        "fewer users (or in-scope group memberships) than the last complete run did, by more "
        "than this (a count, or a percentage of the last run's number), no removal is written "
        "and the run exits 3 unless forced."))
    full_sync_threshold: Guard = Field(default="20%", description=(
        "When an incremental sync (the default once a complete sync exists) finds more changed "
        "users than this in Okta, it runs as a full sync instead and says why: past this, "
        "reading everything costs less than reading each change. A count, or a percentage of "
        "the users the last complete sync read."))
    schedule: Annotated[str, _Schedule()] = Field(default="1h", description=(
        'When `oktasync serve` syncs this app: a duration (at least "1m"; from each run\'s '
        'start, the first at once) or a cron expression, "cron:*/15 * * * *" (minute hour '
        "day month weekday, in `timezone`). Incremental where it can be, full where it must (an "
        "interrupted full sync is resumed). `oktasync sync` is one run and ignores it."))
    timezone: Annotated[str, _Zone()] = Field(default="UTC", description=(
        'The time zone of a cron `schedule` (an IANA name such as "Europe/Berlin"); daylight '
        "saving moves the runs as the zone does."))
    reconcile_schedule: Annotated[str, _Schedule()] = Field(default="1d", description=(
        "When `oktasync serve` runs a reconcile of this app (a full read of Okta and of every "
        "target, repairing changes made by hand): a duration or a cron expression, like "
        "`schedule`."))
    changes: Annotated[str, _Choice(CHANGE_MODES)] = Field(default="poll", description=(
        'How `oktasync serve` learns of changes between scheduled runs: "poll" reads Okta\'s '
        'System Log every poll_interval (works behind a firewall); "hooks" takes Okta event '
        'hook deliveries at POST /hooks/okta/NAME (needs okta_hook_secret; Okta must reach '
        'the service over https); "both" does both (a delivery missed is still polled). '
        "Each event syncs the user or group it names, read again from Okta."))
    poll_interval: Annotated[str, _Duration(5, "5s")] = Field(default="30s", description=(
        'How often `oktasync serve` polls the System Log (changes = "poll" or "both"); at '
        "least 5s. The poller uses its own share of the logs rate-limit bucket."))
    okta_hook_secret: Annotated[SecretSetting | None, _Secret()] = Field(
        default=None, description=(
            "The Authorization header value Okta sends with each event hook delivery (what you "
            'type as the hook\'s authentication secret); required when changes is "hooks" or '
            f'"both". {SECRET_FORMS}.'))
    login_hook_secret: Annotated[SecretSetting | None, _Secret()] = Field(
        default=None, description=(
            "Optional. Default: none, POST /hooks/login/NAME is off. The bearer token a Jira or "
            "Confluence login listener presents to have one user synced at sign-in. "
            f"{SECRET_FORMS}."))
    deactivation_window: Annotated[str, _Duration(60, "1m")] = Field(
        default="1h", description=(
            "Deactivations that `oktasync serve` makes from events count against "
            "max_deactivations over this sliding window (at least 1m): past it, the rest are "
            "held for an administrator (`oktasync held --release`)."))
    okta_max_share: Annotated[float, _Number(0, 1, lo_open=True)] = Field(default=0.5, description=(
        "The share of Okta's rate limit this app may use, greater than 0 and at most 1: leave "
        "room for the other integrations that call the same org."))
    okta_concurrency: Annotated[int, _Int(1, OKTA_CONCURRENCY_LIMIT)] = Field(
        default=8, description=(
        "Concurrent requests to Okta, 1 to 75 (Okta's per-org concurrency limit is 75)."))
    targets: Annotated[tuple[Annotated[str, _Name()], ...], _Array(non_empty=True)] = Field(
        description=(
            "The targets this app writes to: each names a [target.X] section; non-empty, no "
            "repeats. Several apps may share a target (each only changes what it synced "
            "itself)."))
    adopt_existing: AdoptMode = Field(default="email-match", description=(
        "What to do with an existing target account no Okta user has claimed: \"email-match\" "
        "adopts it when its e-mail matches the Okta user's, \"always\" adopts it, \"never\" "
        "reports a conflict. A target may override it."))


class TargetSettings(_Section):
    """One ``[target.NAME]``: a Jira or Confluence Data Center server and how to write to it."""

    model_config = ConfigDict(title="[target.NAME]", json_schema_extra={
        "oneOf": [{"required": ["token"]}, {"required": ["username"]}],
        "dependentRequired": {"username": ["password"], "password": ["username"],
                              "username_replacement": ["username_regex"]}})
    kind: Annotated[str, _Choice(TARGET_KINDS)] = Field(description=(
        '"jira-dc", "confluence-dc", or "atlassian-scim" (an Atlassian Cloud organisation\'s '
        "identity provider directory, through its user provisioning API, SCIM 2.0)."))
    url: Annotated[str, _Url(okta=False)] = Field(description=(
        "Base URL, with the context path if any (e.g. https://example.com/jira); no query. "
        "https is required except for loopback hosts. For atlassian-scim: "
        "https://api.atlassian.com/scim/directory/DIRECTORY_ID (admin.atlassian.com → "
        "Security → Identity providers → your directory)."))
    token: Annotated[SecretSetting | None, _Secret()] = Field(default=None, description=(
        "A personal access token (for atlassian-scim: the directory's API key, required); "
        f"credentials are exactly one way: token, or username + password. {SECRET_FORMS}."))
    username: Annotated[str | None, _Text()] = Field(default=None, description=(
        "The account to write as, with password (instead of token)."))
    password: Annotated[SecretSetting | None, _Secret()] = Field(default=None, description=(
        f"The password of username: {SECRET_FORMS}."))
    default_groups: Strings = Field(default=(), description=(
        "Groups every synced user gets (product access); never removed by the sync."))
    protected_users: Strings = Field(default=(), description=(
        "Usernames the sync never touches, compared case-insensitively."))
    concurrency: Annotated[int, _Int(1, 256)] = Field(default=16, description=(
        "Concurrent requests to this server, 1 to 256: the most; fewer while the server answers "
        "503 to more than a quarter of recent requests (halved, then one more per window of "
        "successes)."))
    max_rps: Annotated[float, _Number(0)] = Field(default=0.0, description=(
        "Requests per second (a number >= 0); 0: only what the server's rate-limit headers "
        "ask."))
    adopt_existing: Annotated[str | None, _Choice(ADOPT_MODES)] = Field(default=None, description=(
        'Optional. Default: the app\'s adopt_existing. "email-match", "always" or "never".'))
    username_from: Annotated[str | None, _Choice(USERNAME_SOURCES)] = Field(
        default=None, description=(
            'Default "email" for atlassian-scim (Atlassian Cloud keys accounts by e-mail), '
            '"login" otherwise. "login": the username comes from the app\'s username_regex '
            'rule. "email": the Okta e-mail is the username (NFC, lower-cased), e.g. for a '
            "directory keyed by e-mail."))
    username_regex: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. Default: the app's username_regex / username_replacement. This target's own "
        "rule, applied to the field username_from names (the login, or the e-mail), exactly like "
        "the app's. Use it to map characters this target refuses instead of losing those users; "
        "the collisions a mapping causes are detected and reported, never merged."))
    username_replacement: Annotated[str | None, _Text(empty_ok=True)] = Field(
        default=None, description=(
        'Default "$1" when this target\'s username_regex is set, as for the app.'))
    user_filter: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. Default: the app's user_filter. This target's own user_filter, for every "
        "app writing to it (an app's user scope on this target: this target's user_filter, "
        "required_groups and okta_app_id where set, else the app's)."))
    required_groups: Annotated[tuple[Annotated[str, _Text()], ...] | None, _Array()] = Field(
        default=None, description=(
            "Optional. Default: the app's required_groups. This target's own, for every app "
            "writing to it; [] lifts the app's on this target."))
    okta_app_id: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. Default: the app's okta_app_id. This target's own, for every app writing "
        "to it."))
    proxy: Annotated[str | None, _Proxy()] = Field(default=None, description=(
        "Optional. Default: the HTTPS_PROXY / HTTP_PROXY environment variables (honouring "
        "NO_PROXY), else none. A forward proxy for the requests to this server, "
        "http://HOST:PORT; https stays end to end (CONNECT)."))
    proxy_username: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. The proxy's user, with proxy_password (Basic authentication)."))
    proxy_password: Annotated[SecretSetting | None, _Secret()] = Field(
        default=None, description=(f"The password of proxy_username: {SECRET_FORMS}."))
    ca_bundle: Annotated[str | None, _PemFile("ca")] = Field(default=None, description=(
        "Optional. Default: none, the system's trust store alone. A PEM file of CA "
        "certificates trusted for this server in addition to the system's (a private CA). "
        "Relative paths are taken against this file's directory. Certificate verification "
        "cannot be switched off."))
    client_cert: Annotated[str | None, _PemFile("cert")] = Field(default=None, description=(
        "Optional. Default: none. A PEM client certificate (chain) for servers that require "
        "mutual TLS; with client_key."))
    client_key: Annotated[str | None, _PemFile("key")] = Field(default=None, description=(
        "The unencrypted PEM private key of client_cert (keep its file 0600)."))
    verified_domains: Strings = Field(default=(), description=(
        "atlassian-scim only. The e-mail domains verified in the Atlassian organisation "
        '(e.g. ["example.com"]): Atlassian provisions accounts on those only, so a user whose '
        "username (e-mail) is on another domain is reported and skipped, never sent. Empty: "
        "not checked here (Atlassian's refusal is then reported per user)."))
    key_expires: Annotated[str | None, _Date()] = Field(default=None, description=(
        'atlassian-scim only. Optional. The date the directory\'s API key expires, "YYYY-MM-DD" '
        "(Atlassian's SCIM keys expire after a year): from 30 days before, every run's summary "
        "warns and `oktasync serve`'s /metrics shows oktasync_target_key_expiry_days."))
    timeout_s: Annotated[float, _Number(0, lo_open=True)] = Field(default=60.0, description=(
        "Seconds one attempt at a request may wait for its answer (a number > 0). A request is "
        "tried up to 8 times and gives up after 8 × timeout_s in total, backoff and Retry-After "
        "waits included; waiting for the server's rate limits is not counted. A server that "
        "accepts connections and never answers is then reported as such."))


class StateSettings(_Section):
    """``[state]``: where the sync keeps what it knows between runs."""

    model_config = ConfigDict(title="[state]")
    dir: Annotated[str, _Text()] = Field(default="var/oktasync", description=(
        "Where checkpoints, ownership records, run summaries and each app's lock live (one "
        "sub-directory per app). Relative paths are taken against this file's directory."))
    keep_runs: Annotated[int, _Int(1, 100_000)] = Field(default=50, description=(
        "How many runs of each app keep their files (the JSON report, the audit CSV, the "
        "findings, drift and plan CSVs), 1 to 100000; older ones are deleted after each run, "
        "never the one a checkpoint can resume. `oktasync history` lists the runs kept."))
    audit: Bool = Field(default=True, description=(
        "Keep an audit CSV of every run: one row per write attempted (time, run id, target, "
        "operation, username, Okta id, before, after, outcome, attempts, HTTP status). false: "
        "the JSON report and the findings only."))


class PipelineSettings(_Section):
    """``[pipeline]``: bounds on work queued and in flight across all targets."""

    model_config = ConfigDict(title="[pipeline]")
    queue_size: Annotated[int, _Int(1, 1_000_000)] = Field(default=1000, description=(
        "Planned writes buffered between reading Okta and writing targets, 1 to 1000000."))
    max_in_flight: Annotated[int, _Int(0)] = Field(default=0, description=(
        "Writes in flight across all targets (an integer >= 0); 0: only the per-target "
        "concurrency limits."))


class ServeSettings(_Section):
    """``[serve]``: the long-running service (``oktasync serve``)."""

    model_config = ConfigDict(title="[serve]")
    listen: Annotated[str, _Listen()] = Field(default="127.0.0.1:8787", description=(
        "HOST:PORT where `oktasync serve` answers /healthz, /metrics and the hooks; loopback "
        "by default."))
    tls_cert: Annotated[str | None, _Text()] = Field(default=None, description=(
        "Optional. Default: none, plain http. A PEM certificate chain to serve https with "
        "(Okta delivers event hooks over https only); with tls_key. Relative paths are taken "
        "against this file's directory."))
    tls_key: Annotated[str | None, _Text()] = Field(default=None, description=(
        "The PEM private key of tls_cert."))
    console: Bool = Field(default=False, description=(
        "Serve the web console at / (the apps, Synchronize, live progress, history, reports): "
        "off unless true, and then only with console_password_hash or console_password. "
        "Bound elsewhere than loopback without tls_cert, the service warns at start."))
    console_password_hash: Annotated[str | None, _Text()] = Field(default=None, description=(
        "The console's password as `oktasync console hash-password` prints it (scrypt, "
        '"scrypt$N$r$p$salt$hash"); the password itself is then nowhere in the file.'))
    console_password: Annotated[SecretSetting | None, _Secret()] = Field(
        default=None, description=(
            f"Instead of console_password_hash: the password itself, {SECRET_FORMS}."))
    inbox_capacity: Annotated[int, _Int(100, 10_000_000)] = Field(
        default=100_000, description=(
            "Events an app's inbox holds before deliveries are refused with 503 (Okta retries "
            "once; what is still lost, the poller or the next sync recovers), 100 to "
            "10000000."))


class ConfigFile(_Section):
    """The whole file: its sections in the order problems are reported."""

    model_config = ConfigDict(title="oktasync configuration", json_schema_extra={
        "description": "The oktasync TOML configuration (oktasync config schema); "
                       "config/example.toml documents every setting."})
    app: Annotated[tuple[AppSettings, ...], _Apps()] = Field(
        description="One [[app]] per Okta org (or per way of syncing one).")
    target: Annotated[dict[Annotated[str, _Name("target name ")], Annotated[
        TargetSettings, _Table("must be a table: write [target.NAME] with kind, url, ...")]],
                      _Table("must be tables such as [target.jira]")] = Field(
        default_factory=dict, description=(
            "One [target.NAME] per Jira or Confluence Data Center server. A target no app names "
            "is allowed."))
    state: Annotated[StateSettings, _Table("must be a table, got {got}")] = Field(
        default=StateSettings(), description="Where the state lives.")
    pipeline: Annotated[PipelineSettings, _Table("must be a table, got {got}")] = Field(
        default=PipelineSettings(), description="Bounds on queued and in-flight work.")
    serve: Annotated[ServeSettings, _Table("must be a table, got {got}")] = Field(
        default=ServeSettings(), description="The service (oktasync serve).")


SECTIONS: Final[Mapping[str, type[BaseModel]]] = {
    "": ConfigFile, "app": AppSettings, "target": TargetSettings, "state": StateSettings,
    "pipeline": PipelineSettings, "serve": ServeSettings}


def json_schema() -> dict[str, Any]:
    """The file's JSON Schema (draft 2020-12, no ``$schema`` keyword: editors such as taplo pick
    their own draft), each setting titled by its key as the file spells it (an editor shows
    ``okta_url``, not "Okta Url"), without the ``"default": null`` of settings that have none."""
    schema: dict[str, Any] = _without_null_defaults(ConfigFile.model_json_schema())
    for section in (schema, *schema["$defs"].values()):
        for key, setting in section.get("properties", {}).items():
            setting["title"] = key
    return schema


def _without_null_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_null_defaults(v) for k, v in node.items()
                if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_without_null_defaults(v) for v in node]
    return node


# --------------------------------------------------------------------------------------------
# the file as it will be used, for `oktasync config check`


def render_toml(file: ConfigFile, state_dir: Path) -> list[str]:
    """Every setting of every section, defaults filled in, as TOML lines: secrets masked with
    where they come from, a setting with no value as a comment, ``[state] dir`` resolved."""
    lines: list[str] = []
    for app in file.app:
        lines += ["[[app]]", *_render_section(app), ""]
    for name, target in file.target.items():
        lines += [f"[target{key_path(name)}]", *_render_section(target), ""]
    lines += ["[state]", f"dir = {_toml_value(str(state_dir))}", ""]
    lines += ["[pipeline]", *_render_section(file.pipeline), ""]
    lines += ["[serve]", *_render_section(file.serve)]
    return lines


def _render_section(section: BaseModel) -> list[str]:
    lines: list[str] = []
    for key in type(section).model_fields:
        value = getattr(section, key)
        if isinstance(value, SecretSetting):
            lines.append(f'{key} = "{MASK}"  # {value.source()}')
        elif value is None:
            lines.append(f"# {key}: not set")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return lines


def toml_value(value: object) -> str:
    """A value as TOML writes it (the console's form shows lists and tables so)."""
    return _toml_value(value)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml_value(v)}"
                          for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, BaseModel):  # an inline table: its settings that are set
        return _toml_value({k: v for k, v in value.model_dump().items() if v is not None})
    raise TypeError(f"no TOML form for {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# the README's settings reference


SECTION_HEADINGS: Final[Mapping[str, str]] = {
    "app": "[[app]]", "target": "[target.NAME]", "state": "[state]", "pipeline": "[pipeline]",
    "serve": "[serve]"}


def markdown_reference() -> list[str]:
    """Every setting of every section as Markdown tables (setting, default, what it does), from
    the same fields as the schema and example.toml, so the README's reference cannot drift from
    them (``make readme`` rewrites it; a test compares)."""
    lines: list[str] = []
    for section, heading in SECTION_HEADINGS.items():
        model = SECTIONS[section]
        lines += [f"#### `{heading}`", "", "| setting | default | what it does |",
                  "|---|---|---|"]
        for key, field in model.model_fields.items():
            description = " ".join((field.description or "").split()).replace("|", "\\|")
            lines.append(f"| `{key}` | {_default_of(field)} | {description} |")
        lines.append("")
    return lines[:-1]


def _default_of(field: Any) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "none"
    if isinstance(default, BaseModel):
        return "see below"
    return f"`{_toml_value(default)}`".replace("|", "\\|")


if __name__ == "__main__":  # `make readme`: the reference block of README.md, on stdout
    print("\n".join(markdown_reference()))
