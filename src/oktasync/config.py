"""Load and validate the TOML configuration before anything runs.

Why so strict: a sync removes access (deactivations, membership removals), so a setting that is
misspelt, out of range or quietly ignored is a production incident in waiting. The loader therefore

* reports EVERY problem at once (an admin fixes the file in one pass, not one error per run), each
  naming its setting by path, e.g. ``app[0] (corp-okta).okta_url: https is required ...``;
* treats unknown keys as errors, with a "did you mean" hint;
* never puts a secret value in a message (secrets live in :class:`~oktasync.secrets.Secret`);
* resolves everything that can fail (environment variables, ``file:`` secrets, regexes,
  durations) now, so nothing surprises the engine at run time.

Two layers. The file's settings are pydantic models (:mod:`oktasync.settings`): each setting is
declared once there, with its check, default and description, and the JSON Schema comes from
them. The engine reads the frozen dataclasses below (:class:`Config`, :class:`AppConfig`, ...),
built from a validated file. They are kept rather than making the models themselves the runtime
objects because the two shapes differ on purpose: the file says ``schedule = "1h"``,
``max_deactivations = "10%"``, ``username_regex`` + ``username_replacement`` and
``okta_token = "${VAR}"``; the engine wants seconds, a :class:`DeactivationLimit`, a compiled
:class:`~oktasync.usernames.UsernameRule`, a :class:`~oktasync.secrets.Secret`, compiled scope
regexes and a target's name from its table key. Keeping them also leaves every attribute the
engine, the tests and the benchmarks read exactly as it was.

Here: reading the file (TOML errors with their line), turning pydantic's errors into the
problems users read (:func:`_problems_of`), the checks that span settings (credentials, a
username regex with its replacement, the targets an app names, unique app names), and building.
Problems are ordered by section as the file is read: unknown top-level keys, each target, each
app, ``[state]``, ``[pipeline]``, then the apps' target names.

Warnings: a file that is valid but deserves a word (secrets written in a file, or in a
``file:`` reference, that other users can read) loads, and :attr:`Config.warnings` says so;
the command line prints them on every run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from oktasync.models import OktaUser, name_key
from oktasync.passwords import hash_problem
from oktasync.schedules import CRON, Schedule
from oktasync.secrets import Secret
from oktasync.settings import (
    APPS_MESSAGE,
    SECTIONS,
    VALUE_FIELD,
    AppSettings,
    AttributeGroupSettings,
    ConfigFile,
    SecretSetting,
    TargetSettings,
    ValidationContext,
    hint,
    is_name,
    key_path,
    parse_duration,
    percent,
    resolve_path,
)
from oktasync.usernames import RuleError, UsernameRule, compile_java_regex

__all__ = [
    "ATTRIBUTE_GROUP_TYPE",
    "ATTRIBUTE_ID_PREFIX",
    "AppConfig",
    "AttributeGroup",
    "AttributeGroupRule",
    "Config",
    "ConfigError",
    "DeactivationLimit",
    "LoadedConfig",
    "NetworkConfig",
    "OAuthConfig",
    "PipelineConfig",
    "TargetConfig",
    "basic_credentials",
    "load_config",
    "parse_duration",
    "read_config",
]


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason, one per line in str()."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


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
class NetworkConfig:
    """How to reach one server: a forward proxy (None: the environment's HTTPS_PROXY /
    NO_PROXY), CA certificates trusted besides the system's, a client certificate."""

    proxy: str | None = None
    proxy_username: str | None = None
    proxy_password: Secret | None = None
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True)
class OAuthConfig:
    """An Okta OAuth 2.0 service app: who signs the client assertion, and the scopes the
    sync needs (decided here, from the app's settings)."""

    client_id: str
    private_key: Secret
    key_id: str | None
    scopes: tuple[str, ...]


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
    # the target's own user scope settings; None: the app's
    user_filter: str | None = None
    required_groups: tuple[str, ...] | None = None
    okta_app_id: str | None = None
    network: NetworkConfig = NetworkConfig()
    verified_domains: tuple[str, ...] = ()  # atlassian-scim: the organisation's domains
    key_expires: date | None = None  # atlassian-scim: when the directory's API key expires


@dataclass(frozen=True)
class UserScope:
    """Who gets an account on one target: each criterion set must hold (``user_filter``: an
    Okta search expression; ``required_groups``: in at least one, by Okta name;
    ``okta_app_id``: assigned to that app instance). Nothing set: every user."""

    user_filter: str | None = None
    required_groups: tuple[str, ...] = ()
    okta_app_id: str | None = None

    @property
    def restricted(self) -> bool:
        return bool(self.user_filter or self.required_groups or self.okta_app_id)

    def plan_settings(self) -> list[Any]:
        return [self.user_filter, sorted(self.required_groups), self.okta_app_id]


ATTRIBUTE_GROUP_TYPE = "ATTRIBUTE"  # the type of an attribute group in the run index
ATTRIBUTE_ID_PREFIX = "attr:"  # never the start of an Okta id (00g..., 00u...)


@dataclass(frozen=True)
class AttributeGroupRule:
    """One ``attribute_groups`` entry: which values of one profile attribute make which group.

    Values are compared case-insensitively (``name_key``), as the targets compare the group
    names they make: "Sales" and "sales" are one group, never two that clash."""

    attribute: str
    template: str  # contains "{value}"
    values: tuple[str, ...] | None  # the allow-list as written, trimmed; None: every value
    mapping: Mapping[str, str]  # value key -> group name (not through the template)

    @functools.cached_property
    def value_keys(self) -> frozenset[str] | None:
        return None if self.values is None else frozenset(name_key(v) for v in self.values)

    def group_name(self, value: str) -> str | None:
        """The group a (trimmed, non-empty) value makes, before group_exclude/rename; None
        when the allow-list leaves it out."""
        key = name_key(value)
        if self.value_keys is not None and key not in self.value_keys:
            return None
        mapped = self.mapping.get(key)
        return mapped if mapped is not None else self.template.replace(VALUE_FIELD, value)


@dataclass(frozen=True)
class AttributeGroup:
    """A group made from a profile attribute's value: synced like an in-scope Okta group,
    under a synthetic id that stays the same from run to run (``attr:<attribute>:<value key>``)."""

    id: str
    name: str  # before group_rename (what group_exclude matched)
    target_name: str


def attribute_group_id(attribute: str, value: str) -> str:
    return f"{ATTRIBUTE_ID_PREFIX}{attribute}:{name_key(value)}"


@dataclass(frozen=True)
class AppConfig:
    """One ``[[app]]``: an Okta org, what to sync from it and into which targets."""

    name: str
    okta_url: str
    okta_token: Secret | None  # None: okta_oauth
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
    full_sync_threshold: DeactivationLimit
    schedule_s: float  # the interval between runs (for a cron schedule: around now)
    schedule: Schedule
    okta_max_share: float
    okta_concurrency: int
    targets: tuple[str, ...]
    adopt_existing: str
    attribute_groups: tuple[AttributeGroupRule, ...] = ()
    user_scope: UserScope = UserScope()
    reconcile_schedule: Schedule = field(default_factory=lambda: Schedule(every_s=86_400))
    changes: str = "poll"  # how serve hears of changes: "poll", "hooks" or "both"
    poll_interval_s: float = 30.0
    okta_hook_secret: Secret | None = None
    login_hook_secret: Secret | None = None
    deactivation_window_s: float = 3600.0
    okta_oauth: OAuthConfig | None = None  # okta_auth = "oauth"
    okta_network: NetworkConfig = NetworkConfig()

    @property
    def polls(self) -> bool:
        return self.changes in ("poll", "both")

    @property
    def takes_hooks(self) -> bool:
        return self.changes in ("hooks", "both")

    def scope_for(self, target: TargetConfig) -> UserScope:
        """Who gets an account on ``target``: each of the target's own scope settings where
        set, else the app's (the one place the override is decided)."""
        own = self.user_scope
        return UserScope(
            user_filter=target.user_filter or own.user_filter,
            required_groups=(own.required_groups if target.required_groups is None
                             else target.required_groups),
            okta_app_id=target.okta_app_id or own.okta_app_id)

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

    @property
    def profile_attributes(self) -> tuple[str, ...]:
        """The profile attributes the sync reads from each Okta user (only these are kept)."""
        return tuple(rule.attribute for rule in self.attribute_groups)

    @property
    def attribute_groups_need_users(self) -> bool:
        """Whether the attribute groups are known only once the users are read (an entry
        without an allow-list makes a group of any value)."""
        return any(rule.values is None for rule in self.attribute_groups)

    def attribute_group(self, attribute: str, value: str) -> AttributeGroup | None:
        """The group one value of one attribute makes (value trimmed and non-empty), after
        group_exclude and group_rename; None when it makes none."""
        rule = next((r for r in self.attribute_groups if r.attribute == attribute), None)
        name = None if rule is None else rule.group_name(value)
        if name is None or any(p.fullmatch(name) for p in self.group_exclude):
            return None
        return AttributeGroup(attribute_group_id(attribute, value), name,
                              self.target_group_name(name))

    def attribute_groups_of(self, user: OktaUser) -> list[AttributeGroup]:
        """The groups a user's attribute values make: the one place they are derived."""
        groups = (self.attribute_group(a, v) for a, v in user.attributes)
        return [g for g in groups if g is not None]

    def listed_attribute_groups(self) -> list[AttributeGroup]:
        """The groups of the allow-listed values: known before any user is read."""
        groups = (self.attribute_group(rule.attribute, value)
                  for rule in self.attribute_groups for value in rule.values or ())
        return [g for g in groups if g is not None]

    def attribute_group_of_id(self, group_id: str) -> AttributeGroup | None:
        """The group a synthetic id stands for under this configuration (its name spelt from
        the value key); None when the id is not an attribute group's or the configuration no
        longer makes it."""
        if not group_id.startswith(ATTRIBUTE_ID_PREFIX):
            return None
        attribute, _, value = group_id.removeprefix(ATTRIBUTE_ID_PREFIX).partition(":")
        return self.attribute_group(attribute, value) if value else None

    def fingerprint(self, targets: Mapping[str, TargetConfig]) -> str:
        """SHA-256 over the settings that change what a sync plans to write.

        State and checkpoints record it, so a changed rule is noticed. Secrets, concurrency,
        rates, timeouts, schedule and guards are left out: they change how, not what. The Okta
        URL is in: another org is another source of truth.
        """
        doc: dict[str, Any] = {
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
        if self.attribute_groups:  # left out when unset: older checkpoints still resume
            doc["attribute_groups"] = [
                [r.attribute, r.template, None if r.values is None else sorted(r.values),
                 sorted(r.mapping.items())] for r in self.attribute_groups]
        scopes = {name: self.scope_for(t).plan_settings() for name in self.targets
                  if (t := targets.get(name)) is not None and self.scope_for(t).restricted}
        if scopes or self.user_scope.restricted:  # left out when unset, as above
            doc["user_scope"] = [self.user_scope.plan_settings(), sorted(scopes.items())]
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
    warnings: tuple[str, ...] = ()  # settings that are valid but do nothing yet, by path
    listen: tuple[str, int] = ("127.0.0.1", 8787)  # [serve] listen
    tls: tuple[Path, Path] | None = None  # [serve] tls_cert, tls_key
    inbox_capacity: int = 100_000  # [serve] inbox_capacity
    keep_runs: int = 50  # [state] keep_runs
    audit: bool = True  # [state] audit
    console: bool = False  # [serve] console
    console_password_hash: str | None = None  # [serve] console_password_hash
    console_password: Secret | None = None  # [serve] console_password

    def secret_values(self) -> list[str]:
        """Every secret this configuration resolved (tokens, passwords, hook secrets, keys,
        proxy passwords), for the redaction: found by type, so a secret setting added later is
        redacted too. Each comes with the forms it may travel in: a password inside Basic
        credentials (base64 of user:password), and each line of a PEM key."""
        values = [secret.reveal() for secret in _secrets_in([*self.apps,
                                                             *self.targets.values()])]
        pairs = [(t.username, t.password) for t in self.targets.values()]
        pairs += [(n.proxy_username, n.proxy_password) for n in (
            *(a.okta_network for a in self.apps), *(t.network for t in self.targets.values()))]
        values += [basic_credentials(user, password.reveal()) for user, password in pairs
                   if user and password is not None]
        return values + [line for value in values if "\n" in value
                         for line in value.splitlines() if len(line) >= 16]


    def app(self, name: str) -> AppConfig:
        """The app called ``name``; a ConfigError (not KeyError) that lists the apps otherwise."""
        for app in self.apps:
            if app.name == name:
                return app
        names = ", ".join(a.name for a in self.apps)
        raise ConfigError([f"--app: no app named {name!r} (apps: {names})"])


def _secrets_in(items: list[Any]) -> Iterator[Secret]:
    """The Secrets in these dataclasses' fields, nested dataclasses included."""
    for item in items:
        for f in fields(item):
            value = getattr(item, f.name)
            if isinstance(value, Secret):
                yield value
            elif is_dataclass(value) and not isinstance(value, type):
                yield from _secrets_in([value])


def basic_credentials(username: str, password: str) -> str:
    """``user:password`` as HTTP Basic authentication carries it (base64)."""
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


# --------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class LoadedConfig:
    """A validated file: its settings as written, defaults filled in (what ``oktasync config
    check`` prints), and the :class:`Config` the engine runs on."""

    file: ConfigFile
    config: Config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the configuration at ``path``; ConfigError lists all problems.

    ``env`` replaces ``os.environ`` for ``${VAR}`` secrets (tests, and callers that scrub it).
    """
    return read_config(path, env).config


def read_config(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """:func:`load_config`, keeping the validated file too."""
    given = Path(path).expanduser()
    raw = _read_toml(given)
    config_path = given.resolve()
    context = ValidationContext(env=os.environ if env is None else env,
                                base_dir=config_path.parent)
    problems: list[_Problem] = []
    file: ConfigFile | None = None
    try:
        file = ConfigFile.model_validate(raw, context=context)
    except ValidationError as exc:
        problems += _problems_of(exc, raw)
    problems += _cross_checks(raw)
    if problems or file is None:
        raise ConfigError([text for _, text in sorted(problems, key=lambda p: p[0])])
    return LoadedConfig(file, _build(file, config_path))


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; a missing, unreadable or malformed file is one problem naming the file.

    A ``#:schema ./oktasync.schema.json`` line (the editors' directive) is a TOML comment."""
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


# --------------------------------------------------------------------------------------------
# problems: pydantic's errors in the users' words, and the checks that span settings

_Rank = tuple[int, int]
_Problem = tuple[_Rank, str]  # (where it sorts, "path: message")
_LAST: _Rank = (5, 0)  # the apps' target names, once every section is reported


def _problems_of(error: ValidationError, raw: dict[str, Any]) -> list[_Problem]:
    """One problem per message, each naming its setting. Input values are left out of the
    errors (``include_input=False``): the only values in messages are those the checks in
    :mod:`oktasync.settings` chose to show, never a secret's."""
    problems: list[_Problem] = []
    for item in error.errors(include_url=False, include_input=False):
        loc = tuple(item["loc"])
        where, rank = _where(loc, raw), _rank(loc, raw)
        if item["type"] == "oktasync":
            messages = [tuple(p) for p in item.get("ctx", {})["problems"]]
        elif item["type"] == "missing":
            messages = [("", APPS_MESSAGE if loc == ("app",) else "is required")]
        elif item["type"] == "extra_forbidden":
            known = SECTIONS[str(loc[0]) if len(loc) > 1 else ""].model_fields
            messages = [("", "unknown setting" + hint(str(loc[-1]), known))]
        else:  # not expected: every kind of value words its own problems
            messages = [("", item["msg"])]
        problems += [(rank, f"{where}{suffix}: {message}") for suffix, message in messages]
    return problems


def _where(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """``app[0] (corp-okta).group_types[1]``, ``target.jira.url``, ``pipeline.queue_size``."""
    head, rest = str(loc[0]), loc[1:]
    if head == "app" and rest and isinstance(rest[0], int):
        where, rest = _app_where(rest[0], raw), rest[1:]
    elif head == "target" and rest:
        where, rest = "target" + key_path(str(rest[0])), rest[1:]
        rest = rest[1:] if rest[:1] == ("[key]",) else rest
    else:
        where = key_path(head)[1:]
    for part in rest:
        where += f"[{part}]" if isinstance(part, int) else key_path(part)
    return where


def _app_where(index: int, raw: dict[str, Any]) -> str:
    """``app[0] (corp-okta)``: the index, and the name as written when there is one."""
    name = raw["app"][index].get("name")
    return f"app[{index}] ({name})" if isinstance(name, str) and name else f"app[{index}]"


def _rank(loc: tuple[int | str, ...], raw: dict[str, Any]) -> _Rank:
    """Where a problem sorts: unknown top-level keys, targets, apps, state, pipeline."""
    section = str(loc[0]) if len(loc) > 1 or loc[0] in SECTIONS else ""
    if section == "target" and len(loc) > 1:
        return (1, list(raw["target"]).index(loc[1]))
    if section == "app" and len(loc) > 1 and isinstance(loc[1], int):
        return (2, loc[1])
    return ({"": 0, "target": 1, "app": 2, "state": 3, "pipeline": 4, "serve": 5}[section], -1)


def _cross_checks(raw: dict[str, Any]) -> list[_Problem]:
    """The checks that span settings, run on the raw tables: they report even when another
    setting of the same section failed."""
    problems: list[_Problem] = []
    targets = raw.get("target", {})
    targets = targets if isinstance(targets, dict) else {}
    for index, (name, table) in enumerate(targets.items()):
        if isinstance(table, dict):
            where = "target" + key_path(name)
            found = (_rule_problems(table) + _credential_problems(table)
                     + _network_problems(table, "") + _kind_problems(table))
            problems += [((1, index), f"{where}{s}: {m}") for s, m in found]
    apps = raw.get("app")
    if not isinstance(apps, list) or not all(isinstance(t, dict) for t in apps):
        return problems
    first_by_name: dict[str, str] = {}
    for index, table in enumerate(apps):
        where = _app_where(index, raw)
        found = _rule_problems(table) + _okta_auth_problems(table) + _network_problems(
            table, "okta_")
        problems += [((2, index), f"{where}{s}: {m}") for s, m in found]
        name = table.get("name")
        if isinstance(name, str) and is_name(name):
            first = first_by_name.setdefault(name.lower(), where)
            if first != where:
                problems.append(((2, index), f"{where}.name: duplicates {first}: app names "
                                             "must be unique"))
    for index, table in enumerate(apps):
        problems += [(_LAST, f"{_app_where(index, raw)}{s}: {m}")
                     for s, m in _unknown_targets(table.get("targets"), targets)]
        if table.get("changes") in ("hooks", "both") and "okta_hook_secret" not in table:
            problems.append(((2, index), f"{_app_where(index, raw)}.okta_hook_secret: is "
                             f"required when changes = {table['changes']!r} (the value Okta "
                             "sends in the Authorization header of each delivery)"))
    serve = raw.get("serve")
    if isinstance(serve, dict):
        problems += [((5, -1), f"serve{s}: {m}") for s, m in _console_problems(serve)]
    if isinstance(serve, dict) and ("tls_cert" in serve) != ("tls_key" in serve):
        problems.append(((5, -1), "serve: tls_cert and tls_key go together: set both "
                                  "(https) or neither (http)"))
    return problems


def _console_problems(serve: dict[str, Any]) -> list[tuple[str, str]]:
    """The console needs one way to check its password, and a hash must be one of ours."""
    found: list[tuple[str, str]] = []
    stored = serve.get("console_password_hash")
    if isinstance(stored, str) and (problem := hash_problem(stored)) is not None:
        found.append((".console_password_hash", problem))
    if "console_password_hash" in serve and "console_password" in serve:
        found.append(("", "set console_password_hash or console_password, not both"))
    if serve.get("console") is True and not ({"console_password_hash", "console_password"}
                                             & serve.keys()):
        found.append((".console", "needs console_password_hash (from `oktasync console "
                                  "hash-password`) or console_password"))
    return found


def _rule_problems(table: dict[str, Any]) -> list[tuple[str, str]]:
    """An app's (or a target's own) username rule: the regex compiles and the groups the
    replacement names exist. Values of the wrong type are the fields' problems."""
    regex, replacement = table.get("username_regex"), table.get("username_replacement")
    if "username_regex" not in table:
        if "username_replacement" in table:
            return [(".username_replacement", "is set but username_regex is not")]
        return []
    if not isinstance(regex, str) or not regex.strip():
        return []
    if "username_replacement" in table and not isinstance(replacement, str):
        return []
    try:
        UsernameRule(regex, "$1" if replacement is None else replacement)
    except RuleError as exc:
        return [(f".{setting}", message) for setting, message in exc.items]
    return []


SCIM_KIND = "atlassian-scim"
SCIM_ONLY = ("verified_domains", "key_expires")


def _kind_problems(table: dict[str, Any]) -> list[tuple[str, str]]:
    """Settings of one kind of target only; Atlassian Cloud takes its directory's API key."""
    if table.get("kind") == SCIM_KIND:
        if "username" in table or "password" in table:
            return [("", "an atlassian-scim target authenticates with its directory's API key: "
                         "set token, not username and password")]
        return []
    return [(f".{key}", f'is for kind = "{SCIM_KIND}" only') for key in SCIM_ONLY
            if key in table]


def _credential_problems(table: dict[str, Any]) -> list[tuple[str, str]]:
    """Exactly one way to authenticate: a token, or a username with its password."""
    has = {key for key in ("token", "username", "password") if key in table}
    if "token" in has and len(has) > 1:
        return [("", "set either token, or username and password, not both")]
    if not has:
        return [("", "needs credentials: token, or username and password")]
    if has == {"username"}:
        return [(".password", "is required with username")]
    if has == {"password"}:
        return [(".username", "is required with password")]
    return []


OAUTH_SETTINGS = ("okta_client_id", "okta_private_key", "okta_key_id")


def _okta_auth_problems(table: dict[str, Any]) -> list[tuple[str, str]]:
    """One way to authenticate to Okta, complete: an API token, or a service app's client id
    with its private key; the other way's settings are refused, not silently ignored."""
    mode = table.get("okta_auth", "token")
    if mode == "token":
        found = [(f".{key}", 'is set but okta_auth is "token": set okta_auth = "oauth" to use '
                             "a service app, or remove it")
                 for key in OAUTH_SETTINGS if key in table]
        if "okta_token" not in table:
            found.append((".okta_token", 'is required (or set okta_auth = "oauth" with '
                                         "okta_client_id and okta_private_key)"))
        return found
    if mode != "oauth":
        return []  # the field's own problem
    found = [(f".{key}", 'is required when okta_auth = "oauth"')
             for key in ("okta_client_id", "okta_private_key") if key not in table]
    if "okta_token" in table:
        found.append((".okta_token", 'is set but okta_auth = "oauth": remove it (an app uses '
                                     "one way to authenticate)"))
    return found


def _network_problems(table: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    """Settings that go together: a proxy's user and password (and a proxy for them), a
    client certificate and its key."""
    found: list[tuple[str, str]] = []
    user, password, proxy = (f"{prefix}proxy_username", f"{prefix}proxy_password",
                             f"{prefix}proxy")
    if (user in table) != (password in table):
        have, need = (user, password) if user in table else (password, user)
        found.append((f".{need}", f"is required with {have}"))
    if (user in table or password in table) and proxy not in table:
        found.append((f".{proxy}", f"is required with {user} and {password} (credentials of "
                                   "a proxy from the environment go in its URL there)"))
    if ("client_cert" in table) != ("client_key" in table):
        have, need = (("client_cert", "client_key") if "client_cert" in table
                      else ("client_key", "client_cert"))
        found.append((f".{need}", f"is required with {have}"))
    return found


def _unknown_targets(names: object, targets: Mapping[str, object]) -> list[tuple[str, str]]:
    """Well-formed names in an app's ``targets`` with no ``[target.X]``: checked even when the
    list as a whole has another problem (a repeat, say)."""
    if not isinstance(names, list):
        return []
    defined = ", ".join(sorted(targets)) or "none"
    return [(f".targets[{index}]",
             f"no [target.{name}] is defined (targets: {defined}){hint(name, targets)}")
            for index, name in enumerate(names)
            if isinstance(name, str) and is_name(name) and name not in targets]


# --------------------------------------------------------------------------------------------
# building the engine's objects from a validated file


def _build(file: ConfigFile, path: Path) -> Config:
    return Config(
        path=path,
        apps=tuple(_build_app(app, path.parent) for app in file.app),
        targets={name: _build_target(name, target, path.parent)
                 for name, target in file.target.items()},
        state_dir=(path.parent / Path(file.state.dir).expanduser()).resolve(),
        pipeline=PipelineConfig(queue_size=file.pipeline.queue_size,
                                max_in_flight=file.pipeline.max_in_flight),
        warnings=tuple(_warnings(file, path)),
        listen=_listen(file.serve.listen),
        tls=(None if file.serve.tls_cert is None or file.serve.tls_key is None
             else (path.parent / file.serve.tls_cert, path.parent / file.serve.tls_key)),
        inbox_capacity=file.serve.inbox_capacity,
        keep_runs=file.state.keep_runs,
        audit=file.state.audit,
        console=file.serve.console,
        console_password_hash=file.serve.console_password_hash,
        console_password=(None if file.serve.console_password is None
                          else file.serve.console_password.secret),
    )


def _warnings(file: ConfigFile, path: Path) -> list[str]:
    """Valid settings that deserve a word: secrets that others on the machine can read,
    written in this file or in the files its ``file:`` references name."""
    written: list[str] = []
    warnings: list[str] = []
    for where, setting in _secret_settings(file):
        if setting.reference.startswith("file:"):
            secret_file = resolve_path(setting.reference[len("file:"):], path.parent)
            if _readable_by_others(secret_file):
                warnings.append(f"{where}: its file {secret_file} is readable by other users; "
                                f"chmod 600 {secret_file}")
        elif not setting.reference.startswith("${"):
            written.append(where)
    for name, target in file.target.items():  # a private key is a secret, though a path
        if target.client_key is not None:
            key_file = resolve_path(target.client_key, path.parent)
            if _readable_by_others(key_file):
                warnings.append(f"target{key_path(name)}.client_key: its file {key_file} is "
                                f"readable by other users; chmod 600 {key_file}")
    if written and _readable_by_others(path):
        warnings.insert(0, f"{path} holds secrets written in it ({', '.join(written)}) and is "
                           f'readable by other users: chmod 600 {path}, or give them as "${{VAR}}" '
                           'or "file:/path"')
    return warnings


def _secret_settings(file: ConfigFile) -> Iterator[tuple[str, SecretSetting]]:
    """Each secret setting of the file, with where it is (``app[0] (corp).okta_token``)."""
    sections: list[tuple[str, Any]] = [
        (f"app[{i}] ({app.name})", app) for i, app in enumerate(file.app)]
    sections += [(f"target{key_path(name)}", target) for name, target in file.target.items()]
    for where, section in sections:
        for key in type(section).model_fields:
            value = getattr(section, key)
            if isinstance(value, SecretSetting):
                yield f"{where}.{key}", value


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & 0o044)
    except OSError:
        return False


def _schedule(text: str, zone: str) -> Schedule:
    if text.startswith(CRON):
        return Schedule(cron=text[len(CRON):].strip(), zone=zone)
    return Schedule(every_s=parse_duration(text), zone=zone)


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _rule(regex: str | None, replacement: str | None, source: str = "login") -> UsernameRule:
    if regex is None:
        return UsernameRule(source=source)
    return UsernameRule(regex, "$1" if replacement is None else replacement, source)


def _limit(value: int | str) -> DeactivationLimit:
    if isinstance(value, int):
        return DeactivationLimit(count=value)
    return DeactivationLimit(percent=percent(value))


def _build_app(a: AppSettings, base_dir: Path) -> AppConfig:
    return AppConfig(
        name=a.name,
        okta_url=a.okta_url,
        okta_token=None if a.okta_token is None else a.okta_token.secret,
        username_rule=_rule(a.username_regex, a.username_replacement),
        import_users=a.import_users,
        update_users=a.update_users,
        sync_user_status=a.sync_user_status,
        deactivate_missing=a.deactivate_missing,
        remove_memberships=a.remove_memberships,
        group_types=tuple(a.group_types),
        group_include=tuple(compile_java_regex(p) for p in a.group_include),
        group_exclude=tuple(compile_java_regex(p) for p in a.group_exclude),
        group_rename=dict(a.group_rename),
        max_deactivations=_limit(a.max_deactivations),
        max_membership_removals=_limit(a.max_membership_removals),
        max_listing_shrink=_limit(a.max_listing_shrink),
        full_sync_threshold=_limit(a.full_sync_threshold),
        schedule_s=_schedule(a.schedule, a.timezone).period_s(datetime.now(UTC)),
        schedule=_schedule(a.schedule, a.timezone),
        okta_max_share=a.okta_max_share,
        okta_concurrency=a.okta_concurrency,
        targets=tuple(a.targets),
        adopt_existing=a.adopt_existing,
        attribute_groups=tuple(_attribute_rule(entry) for entry in a.attribute_groups),
        user_scope=UserScope(a.user_filter and a.user_filter.strip(), tuple(a.required_groups),
                             a.okta_app_id and a.okta_app_id.strip()),
        reconcile_schedule=_schedule(a.reconcile_schedule, a.timezone),
        changes=a.changes,
        poll_interval_s=parse_duration(a.poll_interval),
        okta_hook_secret=None if a.okta_hook_secret is None else a.okta_hook_secret.secret,
        login_hook_secret=None if a.login_hook_secret is None else a.login_hook_secret.secret,
        deactivation_window_s=parse_duration(a.deactivation_window),
        okta_oauth=_oauth(a),
        okta_network=NetworkConfig(
            proxy=a.okta_proxy, proxy_username=a.okta_proxy_username,
            proxy_password=None if a.okta_proxy_password is None else a.okta_proxy_password.secret,
            ca_bundle=_path(a.okta_ca_bundle, base_dir)),
    )


def _oauth(a: AppSettings) -> OAuthConfig | None:
    """The service app, with the scopes this app's reads need: users and groups always, the
    System Log (incremental syncs, serve), and app assignments where an okta_app_id is set."""
    if a.okta_auth != "oauth" or a.okta_client_id is None or a.okta_private_key is None:
        return None
    scopes = ["okta.users.read", "okta.groups.read", "okta.logs.read"]
    if a.okta_app_id:
        scopes.append("okta.apps.read")
    return OAuthConfig(client_id=a.okta_client_id.strip(), private_key=a.okta_private_key.secret,
                       key_id=a.okta_key_id and a.okta_key_id.strip(), scopes=tuple(scopes))


def _path(value: str | None, base_dir: Path) -> Path | None:
    return None if value is None else resolve_path(value, base_dir)


def _attribute_rule(entry: AttributeGroupSettings) -> AttributeGroupRule:
    return AttributeGroupRule(
        attribute=entry.attribute, template=entry.group,
        values=None if entry.values is None else tuple(v.strip() for v in entry.values),
        mapping={name_key(k.strip()): v for k, v in entry.map.items()})


def _build_target(name: str, t: TargetSettings, base_dir: Path) -> TargetConfig:
    return TargetConfig(
        name=name,
        kind=t.kind,
        url=t.url,
        token=None if t.token is None else t.token.secret,
        username=t.username,
        password=None if t.password is None else t.password.secret,
        default_groups=tuple(t.default_groups),
        protected_users=frozenset(user.lower() for user in t.protected_users),
        concurrency=t.concurrency,
        max_rps=t.max_rps,
        adopt_existing=t.adopt_existing,
        username_from=_username_from(t),
        username_rule=(None if t.username_regex is None
                       else _rule(t.username_regex, t.username_replacement,
                                  _username_from(t))),
        timeout_s=t.timeout_s,
        user_filter=t.user_filter and t.user_filter.strip(),
        required_groups=None if t.required_groups is None else tuple(t.required_groups),
        okta_app_id=t.okta_app_id and t.okta_app_id.strip(),
        network=NetworkConfig(
            proxy=t.proxy, proxy_username=t.proxy_username,
            proxy_password=None if t.proxy_password is None else t.proxy_password.secret,
            ca_bundle=_path(t.ca_bundle, base_dir), client_cert=_path(t.client_cert, base_dir),
            client_key=_path(t.client_key, base_dir)),
        verified_domains=tuple(d.strip().lower().lstrip("@") for d in t.verified_domains),
        key_expires=None if t.key_expires is None else date.fromisoformat(t.key_expires),
    )


def _username_from(t: TargetSettings) -> str:
    """Atlassian Cloud keys accounts by e-mail; the Data Center products by username."""
    if t.username_from is not None:
        return t.username_from
    return "email" if t.kind == SCIM_KIND else "login"
