"""Configuration loading and validation: every problem at once, by path, and no secret leaks."""

from __future__ import annotations

import copy
import pickle
import re
import textwrap
import unicodedata
from pathlib import Path

import pytest

from oktasync.config import (
    AppConfig,
    Config,
    ConfigError,
    DeactivationLimit,
    load_config,
    parse_duration,
)
from oktasync.secrets import Secret
from oktasync.usernames import UsernameRule, compile_java_regex, translate_java_regex

REPO = Path(__file__).resolve().parents[2]
OKTA_SECRET = "00okta-secret-value-XYZ"
JIRA_SECRET = "jira-pat-secret-value-QRS"
ENV = {"OKTA_API_TOKEN": OKTA_SECRET, "JIRA_PAT": JIRA_SECRET, "CONFLUENCE_PAT": "conf-secret"}

APP = """
[[app]]
name = "corp-okta"
okta_url = "https://example.okta.com"
okta_token = "${OKTA_API_TOKEN}"
targets = ["jira"]
"""
TARGET = """
[target.jira]
kind = "jira-dc"
url = "https://jira.example.com"
token = "${JIRA_PAT}"
"""


def write(tmp_path: Path, text: str, name: str = "oktasync.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=ENV if env is None else env)


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env)
    return caught.value.problems


def app_with(**settings: str) -> str:
    """The minimal app plus extra ``key = <toml value>`` lines, and the jira target."""
    lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
    return APP + lines + TARGET


# -- the shipped files  --


def test_example_file_loads_with_its_env_vars() -> None:
    config = load_config(REPO / "config" / "example.toml", env=ENV)
    app = config.app("corp-okta")
    assert app.okta_token.reveal() == OKTA_SECRET
    assert app.targets == ("jira", "confluence")
    assert app.max_deactivations == DeactivationLimit(percent=10.0)
    assert app.max_membership_removals == DeactivationLimit(percent=10.0)
    assert app.max_listing_shrink == DeactivationLimit(percent=10.0)
    assert config.targets["jira"].token == Secret(JIRA_SECRET)
    assert config.targets["jira"].protected_users == frozenset({"admin"})
    assert config.state_dir == REPO / "config" / "var" / "oktasync"
    assert app.username_rule.apply("Demouser@Gmail.com") == "demouser"


def test_example_file_without_env_names_each_missing_var() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "config" / "example.toml", env={})
    text = str(caught.value)
    for var in ("OKTA_API_TOKEN", "JIRA_PAT", "CONFLUENCE_PAT"):
        assert f"environment variable {var} is not set" in text
    assert len(caught.value.problems) == 3


def test_demo_file_points_at_the_emulators() -> None:
    config = load_config(REPO / "config" / "demo.toml", env={})
    app = config.app("demo-okta")
    assert app.okta_url == "http://127.0.0.1:8471"
    assert app.okta_token.reveal() == "00demo-oktasync-okta-api-token"
    jira, confluence = config.targets["jira"], config.targets["confluence"]
    assert (jira.kind, jira.url) == ("jira-dc", "http://127.0.0.1:8472")
    assert jira.token == Secret("demo-jira-personal-access-token")
    assert (confluence.kind, confluence.url) == ("confluence-dc", "http://127.0.0.1:8473")
    assert confluence.token == Secret("demo-confluence-personal-access-token")
    assert jira.default_groups == ("jira-software-users",)
    assert config.state_dir == REPO / "var" / "demo"
    assert app.username_rule.apply("demouser@gmail.com") == "demouser"


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, APP + TARGET)
    app, jira = config.apps[0], config.targets["jira"]
    assert (app.import_users, app.update_users, app.sync_user_status) == (True, True, True)
    assert (app.deactivate_missing, app.remove_memberships) == (False, True)
    assert app.group_types == ("OKTA_GROUP", "APP_GROUP")
    assert app.username_rule == UsernameRule(None)
    assert (app.schedule_s, app.okta_max_share, app.okta_concurrency) == (3600.0, 0.5, 8)
    assert app.adopt_existing == "email-match"
    assert (jira.concurrency, jira.max_rps, jira.timeout_s) == (16, 0.0, 60.0)
    assert (jira.adopt_existing, jira.username_from) == (None, "login")
    assert config.state_dir == tmp_path / "var" / "oktasync"
    assert (config.pipeline.queue_size, config.pipeline.max_in_flight) == (1000, 0)


# -- every problem at once  --


def test_five_mistakes_give_five_problems_each_naming_its_setting(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        [[app]]
        name = "corp-okta"
        okta_url = "http://example.okta.com"
        okta_token = "${OKTA_API_TOKEN}"
        okta_concurrency = 100
        targets = ["jira"]
        schedul = "1h"

        [target.jira]
        kind = "jira-dc"
        url = "https://jira.example.com"
        token = "${JIRA_PAT}"
        concurrency = 0

        [pipeline]
        queue_size = "big"
        """,
    )
    assert sorted(found) == sorted(
        [
            "app[0] (corp-okta).okta_url: https is required except for loopback hosts",
            "app[0] (corp-okta).okta_concurrency: must be an integer <= 75, got 100",
            "app[0] (corp-okta).schedul: unknown setting (did you mean 'schedule'?)",
            "target.jira.concurrency: must be an integer >= 1, got 0",
            "pipeline.queue_size: must be an integer from 1 to 1000000, got 'big'",
        ]
    )


def test_str_of_config_error_lists_one_problem_per_line() -> None:
    error = ConfigError(["a: one", "b: two"])
    assert str(error) == "a: one\nb: two"


def test_required_settings_and_missing_app(tmp_path: Path) -> None:
    found = problems(tmp_path, "[[app]]\n[target.x]\n")
    assert found == [
        "target.x.kind: is required",
        "target.x.url: is required",
        "target.x: needs credentials: token, or username and password",
        "app[0].name: is required",
        "app[0].okta_url: is required",
        "app[0].targets: is required",
        'app[0].okta_token: is required (or set okta_auth = "oauth" with okta_client_id and '
        "okta_private_key)",
    ]
    assert problems(tmp_path, TARGET) == ["app: must be an array of tables: write [[app]] sections"]


# -- files  --


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    assert caught.value.problems == [f"{tmp_path / 'nope.toml'}: no such configuration file"]


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[app]]\nokta_token = "{OKTA_SECRET}"\nname = \n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: not valid TOML")
    assert "line 3" in problem
    assert OKTA_SECRET not in problem


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)  # a directory
    assert caught.value.problems[0].startswith(f"{tmp_path}: cannot read")


# -- secrets  --


def test_secret_masks_every_textual_form() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == str(secret) == f"{secret}" == "***"
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2") and secret != Secret("other")
    assert len({secret, Secret("hunter2")}) == 1
    assert copy.deepcopy(secret) is secret
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_secrets_never_appear_in_messages_or_repr(tmp_path: Path) -> None:
    token_file = write(tmp_path, f"  {JIRA_SECRET}\n", "jira.token")
    config = load(
        tmp_path,
        APP.replace("${OKTA_API_TOKEN}", OKTA_SECRET)
        + TARGET.replace("${JIRA_PAT}", f"file:{token_file}"),
    )
    assert config.apps[0].okta_token.reveal() == OKTA_SECRET
    assert config.targets["jira"].token == Secret(JIRA_SECRET)
    for text in (repr(config), str(config), repr(config.apps[0]), repr(config.targets)):
        assert OKTA_SECRET not in text and JIRA_SECRET not in text
    # now break the file in ways that touch the secret settings
    found = problems(
        tmp_path,
        APP.replace("${OKTA_API_TOKEN}", OKTA_SECRET).replace('"corp-okta"', '"bad name"')
        + TARGET
        + f'password = "{JIRA_SECRET}"\ntokn = "{JIRA_SECRET}"\n',
    )
    text = "\n".join(found)
    assert OKTA_SECRET not in text and JIRA_SECRET not in text
    assert "target.jira: set either token, or username and password, not both" in found
    assert "target.jira.tokn: unknown setting (did you mean 'token'?)" in found


def test_secret_of_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    found = problems(tmp_path, APP.replace('"${OKTA_API_TOKEN}"', "123456789") + TARGET)
    assert found == [
        "app[0] (corp-okta).okta_token: must be a string: ${VAR}, file:/path or the value itself"
    ]


def test_missing_env_var_names_the_var_not_a_value(tmp_path: Path) -> None:
    found = problems(tmp_path, APP + TARGET, env={"JIRA_PAT": JIRA_SECRET})
    assert found == [
        "app[0] (corp-okta).okta_token: environment variable OKTA_API_TOKEN is not set"
    ]
    found = problems(tmp_path, APP + TARGET, env={"OKTA_API_TOKEN": " ", "JIRA_PAT": "x"})
    assert found == ["app[0] (corp-okta).okta_token: environment variable OKTA_API_TOKEN is empty"]
    found = problems(tmp_path, APP.replace("${OKTA_API_TOKEN}", "${OKTA") + TARGET)
    assert found == [
        "app[0] (corp-okta).okta_token: malformed environment reference: write it as ${NAME}"
    ]


def test_file_tokens_relative_missing_and_empty(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "okta").write_text(f"{OKTA_SECRET}\n", encoding="utf-8")
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    text = APP.replace("${OKTA_API_TOKEN}", "file:secrets/okta") + TARGET
    assert load(tmp_path, text).apps[0].okta_token.reveal() == OKTA_SECRET
    found = problems(tmp_path, text.replace("file:secrets/okta", "file:secrets/missing"))
    assert found == [
        f"app[0] (corp-okta).okta_token: cannot read file {tmp_path / 'secrets' / 'missing'}: "
        "No such file or directory"
    ]
    found = problems(tmp_path, text.replace("file:secrets/okta", f"file:{tmp_path / 'empty'}"))
    assert found == [f"app[0] (corp-okta).okta_token: file {tmp_path / 'empty'} is empty"]


def test_username_and_password_credentials(tmp_path: Path) -> None:
    target = TARGET.replace('token = "${JIRA_PAT}"', 'username = "bot"\npassword = "${JIRA_PAT}"')
    jira = load(tmp_path, APP + target).targets["jira"]
    assert (jira.token, jira.username, jira.password) == (None, "bot", Secret(JIRA_SECRET))
    only_user = TARGET.replace('token = "${JIRA_PAT}"', 'username = "bot"')
    assert problems(tmp_path, APP + only_user) == [
        "target.jira.password: is required with username"
    ]


# -- URLs  --


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8471", "http://127.0.0.1:8471"),
        ("http://127.8.9.10/", "http://127.8.9.10"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://[::1]:8471", "http://[::1]:8471"),
        ("https://Example.okta.com/", "https://example.okta.com"),
    ],
)
def test_okta_url_loopback_http_allowed(tmp_path: Path, url: str, expected: str) -> None:
    config = load(tmp_path, APP.replace("https://example.okta.com", url) + TARGET)
    assert config.apps[0].okta_url == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.okta.com", "https is required except for loopback hosts"),
        ("http://10.0.0.1", "https is required except for loopback hosts"),
        ("https://example-admin.okta.com", "is the Okta admin console, not the API"),
        ("https://example.okta.com/api/v1", "must not have a path"),
        ("https://example.okta.com?x=1", "must not have a query or fragment"),
        ("example.okta.com", "must be an absolute http(s) URL"),
        ("https://me:pw@example.okta.com", "must not contain credentials"),
    ],
)
def test_okta_url_refused(tmp_path: Path, url: str, message: str) -> None:
    (found,) = problems(tmp_path, APP.replace("https://example.okta.com", url) + TARGET)
    assert found.startswith(f"app[0] (corp-okta).okta_url: {message}")
    assert "pw" not in found


def test_target_url_may_have_a_context_path_but_not_plain_http(tmp_path: Path) -> None:
    config = load(tmp_path, APP + TARGET.replace("jira.example.com", "example.com/jira/"))
    assert config.targets["jira"].url == "https://example.com/jira"
    found = problems(tmp_path, APP + TARGET.replace("https://jira", "http://jira"))
    assert found == ["target.jira.url: https is required except for loopback hosts"]


# -- regexes and the username rule  --


def test_java_regex_translation() -> None:
    assert translate_java_regex("(?<user>[^@]+)@(?<dom>.*)") == "(?P<user>[^@]+)@(?P<dom>.*)"
    assert translate_java_regex(r"(?<=a)(?<!b)") == r"(?<=a)(?<!b)"  # lookbehinds untouched
    assert translate_java_regex(r"(?<n>a)\k<n>") == "(?P<n>a)(?P=n)"
    assert compile_java_regex(r"a\x{E9}").fullmatch("aé")
    assert compile_java_regex(r"a\z").search("a\n") is None  # Java \z: the very end
    assert compile_java_regex(r"a\Z").search("a\n")  # Java \Z: before a final line break
    assert compile_java_regex(r"[\]x]+").fullmatch("]x]")


@pytest.mark.parametrize(
    ("regex", "construct"),
    [
        (r"\p{Lower}+", r"\p{...}"),
        (r"\P{L}", r"\P{...}"),
        (r"\Q.\E", r"\Q...\E"),
        (r"\Ga", r"\G"),
        (r"\h+", r"\h"),
        (r"[a-z&&[^aeiou]]", "&&"),
        (r"[a-c[x-z]]", "nested character class"),
    ],
)
def test_java_only_regex_syntax_is_refused(tmp_path: Path, regex: str, construct: str) -> None:
    text = app_with(username_regex=f"'{regex}'")
    (found,) = problems(tmp_path, text)
    assert found.startswith("app[0] (corp-okta).username_regex: Java-only syntax")
    assert construct in found


def test_regex_that_does_not_compile(tmp_path: Path) -> None:
    found = problems(tmp_path, app_with(username_regex="'(.*'", group_exclude="['ok', '[z']"))
    assert found == [
        "app[0] (corp-okta).group_exclude[1]: does not compile: "
        "unterminated character set at position 0",
        "app[0] (corp-okta).username_regex: does not compile: "
        "missing ), unterminated subpattern at position 0",
    ]


def test_replacement_group_references_are_checked(tmp_path: Path) -> None:
    text = app_with(username_regex="'(?<user>.*)@.*'", username_replacement="'$2-${dom}-$'")
    assert problems(tmp_path, text) == [
        "app[0] (corp-okta).username_replacement: $2 refers to group 2, but username_regex has 1",
        "app[0] (corp-okta).username_replacement: ${dom} refers to no group named 'dom' "
        "in username_regex",
        "app[0] (corp-okta).username_replacement: '$' must be followed by a group number or "
        "{name}; write \\$ for a literal '$'",
    ]
    # the default "$1" needs a group too
    (found,) = problems(tmp_path, app_with(username_regex="'@.*'"))
    assert "$1 refers to group 1, but username_regex has 0" in found
    (found,) = problems(tmp_path, app_with(username_replacement="'$1'"))
    assert found == "app[0] (corp-okta).username_replacement: is set but username_regex is not"


@pytest.mark.parametrize(
    ("regex", "replacement", "login", "username"),
    [
        ("(.*)@.*", "$1", "demouser@gmail.com", "demouser"),
        ("(.*)@.*", "$1", "John.Smith@x.com", "john.smith"),
        ("(.*)@.*", "$1", "no-at-sign", "no-at-sign"),  # no match: the login is kept
        ("(.*)@.*", "$1", "Mixed.Case", "mixed.case"),  # ...but still lower-cased
        ("@.*", "", "a@b", "a"),  # like replaceFirst: only the match is replaced
        ("x", "y", "axbx", "aybx"),  # only the first match
        ("^([^.]+)\\.", "$1_", "first.middle.last", "first_middle.last"),  # the rest is kept
        ("(?<user>[^@]+)@(?<dom>[^.]+).*", "${dom}-${user}", "bob@corp.com", "corp-bob"),
        ("(.*)@.*", "\\$$1", "cash@x", "$cash"),  # \$ is a literal dollar
        ("(a)", "$12", "ab", "a2b"),  # $12 with one group: group 1, then "2"
        ("(a)|(b)", "[$2]", "a", "[]"),  # a group that did not take part: empty
        (None, "$1", "Ünïcode@Example.COM", "ünïcode@example.com"),
        (None, "$1", "Stra\u00dfe", "stra\u00dfe"),  # str.lower() keeps ß
        (None, "$1", "\u0130stanbul", "i\u0307stanbul"),  # str.lower() of İ: i + combining dot
        (None, "$1", "Jose\u0301", "jos\u00e9"),  # decomposed é becomes the composed form
    ],
)
def test_username_rule_apply(
    regex: str | None, replacement: str, login: str, username: str
) -> None:
    result = UsernameRule(regex, replacement).apply(login)
    assert result == username
    assert unicodedata.is_normalized("NFC", result)


def test_username_rule_equality_and_repr() -> None:
    assert UsernameRule("(.*)@.*", "$1") == UsernameRule("(.*)@.*", "$1")
    assert UsernameRule("(.*)@.*", "$1") != UsernameRule("(.*)@.*", "x$1")
    assert repr(UsernameRule("(.*)@.*")) == \
        "UsernameRule(regex='(.*)@.*', replacement='$1', source='login')"
    assert UsernameRule(source="email") != UsernameRule()


# -- scope, renames  --


def test_group_scope_and_rename(tmp_path: Path) -> None:
    app = load(
        tmp_path,
        app_with(
            group_include="['Eng.*', 'Sales & Marketing']",
            group_exclude="['.*-old']",
            group_rename="{ 'Engineering' = 'jira-eng' }",
        ),
    ).apps[0]
    assert isinstance(app, AppConfig)
    assert app.group_in_scope("Engineering", "OKTA_GROUP")
    assert app.group_in_scope("Sales & Marketing", "APP_GROUP")
    assert not app.group_in_scope("Engineering", "BUILT_IN")
    assert not app.group_in_scope("Eng-old", "OKTA_GROUP")
    assert not app.group_in_scope("xEngineering", "OKTA_GROUP")  # fullmatch, not search
    assert app.target_group_name("Engineering") == "jira-eng"
    assert app.target_group_name("Sales & Marketing") == "Sales & Marketing"


def test_group_types_and_rename_values_are_checked(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        app_with(group_types="['OKTA_GROUP', 'APP_GRUOP']", group_rename="{ 'A' = '', 'B' = 3 }"),
    )
    assert found == [
        "app[0] (corp-okta).group_types[1]: must be one of 'OKTA_GROUP', 'APP_GROUP', 'BUILT_IN', "
        "got 'APP_GRUOP' (did you mean 'APP_GROUP'?)",
        "app[0] (corp-okta).group_rename.A: must be a non-empty string, got ''",
        "app[0] (corp-okta).group_rename.B: must be a non-empty string, got 3",
    ]


def test_rename_collisions(tmp_path: Path) -> None:
    rename = "{ 'Eng' = 'Developers', 'Dev Team' = 'developers', 'Ops' = 'Sre' }"
    (found,) = problems(tmp_path, app_with(group_rename=rename))
    assert found.startswith(
        "app[0] (corp-okta).group_rename.\"Dev Team\": renames to 'developers' like 'Eng' does"
    )
    chain = "{ 'A' = 'b', 'B' = 'C' }"  # Okta A lands on the group that mirrored Okta B
    (found,) = problems(tmp_path, app_with(group_rename=chain))
    assert found.startswith("app[0] (corp-okta).group_rename.A: renames to 'b', which is renamed")
    # a case-only rename of a group is fine
    load(tmp_path, app_with(group_rename="{ 'eng' = 'Eng' }"))


# -- numbers, percentages, durations  --


@pytest.mark.parametrize(
    ("setting", "limit", "synced", "allowed"),
    [
        ("5", DeactivationLimit(count=5), 1000, 5),
        ("0", DeactivationLimit(count=0), 1000, 0),
        ("'10%'", DeactivationLimit(percent=10.0), 29, 2),
        ("'2.5%'", DeactivationLimit(percent=2.5), 1000, 25),
        ("'0.29%'", DeactivationLimit(percent=0.29), 10000, 29),  # no float-noise off-by-one
        ("'100%'", DeactivationLimit(percent=100.0), 7, 7),
    ],
)
def test_max_deactivations(
    tmp_path: Path, setting: str, limit: DeactivationLimit, synced: int, allowed: int
) -> None:
    app = load(tmp_path, app_with(max_deactivations=setting)).apps[0]
    assert app.max_deactivations == limit
    assert app.max_deactivations.allowed(synced) == allowed


@pytest.mark.parametrize("setting", ["-1", "'101%'", "'ten%'", "'10'", "1.5", "true"])
@pytest.mark.parametrize("guard", ["max_deactivations", "max_membership_removals",
                                   "max_listing_shrink"])
def test_guard_limits_refused(tmp_path: Path, setting: str, guard: str) -> None:
    (found,) = problems(tmp_path, app_with(**{guard: setting}))
    assert found.startswith(f"app[0] (corp-okta).{guard}: must be a count >= 0 or a ")


@pytest.mark.parametrize("guard", ["max_membership_removals", "max_listing_shrink"])
def test_the_new_guards_default_like_max_deactivations_and_take_counts(
    tmp_path: Path, guard: str,
) -> None:
    assert getattr(load(tmp_path, app_with()).apps[0], guard) == DeactivationLimit(percent=10.0)
    app = load(tmp_path, app_with(**{guard: "25"})).apps[0]
    assert getattr(app, guard) == DeactivationLimit(count=25)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("1d2h3m4s", 93784)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1m1h", "1.5h", "-1h", "1 h", "1H"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_schedule_minimum_and_type(tmp_path: Path) -> None:
    assert load(tmp_path, app_with(schedule="'1m'")).apps[0].schedule_s == 60
    (found,) = problems(tmp_path, app_with(schedule="'30s'"))
    assert found == "app[0] (corp-okta).schedule: must be at least 1m, got '30s'"
    (found,) = problems(tmp_path, app_with(schedule="3600"))
    assert found.startswith("app[0] (corp-okta).schedule: must be a duration string")


def test_number_ranges(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        app_with(okta_max_share="0", okta_concurrency="true", import_users="'yes'")
        + "max_rps = -1\ntimeout_s = 0\nusername_from = 'mail'\n",
    )
    assert found == [
        "target.jira.max_rps: must be a number >= 0, got -1",
        "target.jira.username_from: must be one of 'login', 'email', got 'mail' "
        "(did you mean 'email'?)",
        "target.jira.timeout_s: must be a number > 0, got 0",
        "app[0] (corp-okta).import_users: must be true or false, got 'yes'",
        "app[0] (corp-okta).okta_max_share: must be a number > 0 and <= 1, got 0",
        "app[0] (corp-okta).okta_concurrency: must be an integer from 1 to 75, got True",
    ]


# -- names, targets, unknown keys  --


def test_unknown_keys_with_and_without_hint(tmp_path: Path) -> None:
    found = problems(tmp_path, APP + "okta_tokn = 'x'\nfrobnicate = 1\n" + TARGET + "[stat]\n")
    assert found == [
        "stat: unknown setting (did you mean 'state'?)",
        "app[0] (corp-okta).okta_tokn: unknown setting (did you mean 'okta_token'?)",
        "app[0] (corp-okta).frobnicate: unknown setting",
    ]


def test_duplicate_app_names(tmp_path: Path) -> None:
    found = problems(tmp_path, APP + APP.replace('"corp-okta"', '"Corp-Okta"') + TARGET)
    assert found == [
        "app[1] (Corp-Okta).name: duplicates app[0] (corp-okta): app names must be unique"
    ]


@pytest.mark.parametrize("name", ["bad name", "..", "a/b", ""])
def test_app_name_must_be_a_safe_directory_name(tmp_path: Path, name: str) -> None:
    (found,) = problems(tmp_path, APP.replace('"corp-okta"', f'"{name}"') + TARGET)
    assert found.endswith(f"name: must match [A-Za-z0-9._-]+ (and not be . or ..), got {name!r}")


def test_app_targets_must_exist_and_be_unique(tmp_path: Path) -> None:
    found = problems(tmp_path, APP.replace('["jira"]', '["jira", "jria", "jira"]') + TARGET)
    assert found == [
        "app[0] (corp-okta).targets[2]: 'jira' is listed twice",
        "app[0] (corp-okta).targets[1]: no [target.jria] is defined (targets: jira) "
        "(did you mean 'jira'?)",
    ]
    (found,) = problems(tmp_path, APP.replace('["jira"]', "[]") + TARGET)
    assert found == "app[0] (corp-okta).targets: must not be empty"


def test_shared_and_unused_targets_are_fine(tmp_path: Path) -> None:
    second = APP.replace('"corp-okta"', '"other"')
    unused = TARGET.replace("[target.jira]", "[target.spare]")
    config = load(tmp_path, APP + second + TARGET + unused)
    assert [a.targets for a in config.apps] == [("jira",), ("jira",)]
    assert set(config.targets) == {"jira", "spare"}


def test_app_lookup_error_lists_apps(tmp_path: Path) -> None:
    config = load(tmp_path, APP + APP.replace('"corp-okta"', '"b"') + TARGET)
    with pytest.raises(ConfigError) as caught:
        config.app("x")
    assert caught.value.problems == ["--app: no app named 'x' (apps: corp-okta, b)"]


def test_state_dir_and_pipeline(tmp_path: Path) -> None:
    text = APP + TARGET + "[state]\ndir = '../elsewhere'\n[pipeline]\nmax_in_flight = 64\n"
    config = load(tmp_path, text)
    assert config.state_dir == tmp_path.parent / "elsewhere"
    assert config.pipeline.max_in_flight == 64
    found = problems(tmp_path, APP + TARGET + "[pipeline]\nqueue_size = 0\nmax_in_flight = -1\n")
    assert found == [
        "pipeline.queue_size: must be an integer >= 1, got 0",
        "pipeline.max_in_flight: must be an integer >= 0, got -1",
    ]


# -- fingerprint  --


def test_fingerprint_follows_the_plan_not_the_pace(tmp_path: Path) -> None:
    def fingerprint(app_extra: str = "", target_extra: str = "", env: dict[str, str] = ENV) -> str:
        config = load(tmp_path, APP + app_extra + TARGET + target_extra, env)
        return config.apps[0].fingerprint(config.targets)

    base = fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert fingerprint() == base
    # pace and secrets: unchanged
    assert fingerprint("okta_concurrency = 20\nschedule = '5m'\n", "concurrency = 99\n") == base
    assert fingerprint("", "max_rps = 5\ntimeout_s = 5\n") == base
    assert fingerprint(env={**ENV, "OKTA_API_TOKEN": "other", "JIRA_PAT": "other"}) == base
    # what is planned: changed
    changed = {
        fingerprint("username_regex = '(.*)@.*'\n"),
        fingerprint("username_regex = '([^@]*)@.*'\n"),
        fingerprint("deactivate_missing = true\n"),
        fingerprint("group_rename = { 'a' = 'b' }\n"),
        fingerprint("group_exclude = ['x']\n"),
        fingerprint("", "default_groups = ['jira-users']\n"),
        fingerprint("", "protected_users = ['admin']\n"),
        fingerprint("", "username_from = 'email'\n"),
        fingerprint("", "adopt_existing = 'never'\n"),
    }
    assert base not in changed and len(changed) == 9


# -- a target's own username rule --


def test_a_target_may_name_accounts_its_own_way(tmp_path: Path) -> None:
    text = (APP + "username_regex = '(.*)@.*'\n" + TARGET +
            TARGET.replace("[target.jira]", "[target.j2]")
            .replace('kind = "jira-dc"', 'kind = "confluence-dc"') +
            "username_regex = '([^+@]*)(?:\\+[^@]*)?@.*'\nusername_replacement = '$1'\n")
    text = text.replace('targets = ["jira"]', 'targets = ["jira", "j2"]')
    config = load(tmp_path, text)
    app = config.apps[0]
    assert app.rule_for(config.targets["jira"]) is app.username_rule
    own = app.rule_for(config.targets["j2"])
    assert own.username("Zoe.Taylor+okta@corp.example", None) == "zoe.taylor"
    assert app.username_rule.username("Zoe.Taylor+okta@corp.example", None) == "zoe.taylor+okta"
    # another rule on a target is another plan: a checkpoint made under the old one is refused
    (tmp_path / "plain").mkdir()
    plain = load(tmp_path / "plain", (APP + "username_regex = '(.*)@.*'\n" + TARGET + TARGET
                                      .replace("[target.jira]", "[target.j2]"))
                 .replace('targets = ["jira"]', 'targets = ["jira", "j2"]'))
    assert plain.apps[0].fingerprint(plain.targets) != app.fingerprint(config.targets)


def test_username_from_email_names_accounts_by_the_email(tmp_path: Path) -> None:
    config = load(tmp_path, app_with(username_regex="'(.*)@.*'") + 'username_from = "email"\n')
    rule = config.apps[0].rule_for(config.targets["jira"])
    assert rule.username("jdoe@corp.example", "John.Doe@Corp.Example") == "john.doe@corp.example"
    assert rule.username("jdoe@corp.example", None) == ""  # no e-mail: skipped and reported


def test_a_targets_own_rule_is_checked_like_the_apps(tmp_path: Path) -> None:
    found = problems(tmp_path, app_with() + "username_replacement = '$1'\n"
                     "adopt_existing = 'never'\n")
    assert found == ["target.jira.username_replacement: is set but username_regex is not"]
    found = problems(tmp_path, app_with() + "username_regex = '(.*)@'\n"
                     "username_replacement = '$2'\n")
    assert found == ["target.jira.username_replacement: $2 refers to group 2, but "
                     "username_regex has 1"]
    (found,) = problems(tmp_path, app_with() + "username_regex = '\\p{L}+'\n")
    assert found.startswith("target.jira.username_regex: Java-only syntax")


def test_an_empty_replacement_deletes_what_the_regex_matched(tmp_path: Path) -> None:
    # Java's replaceFirst with "": the match is removed (the domain, here); a common rule
    config = load(tmp_path, app_with(username_regex="'@corp\\.com$'", username_replacement="''"))
    rule = config.apps[0].rule_for(config.targets["jira"])
    assert rule.username("Alice@corp.com", None) == "alice"


def test_service_change_settings_are_checked(tmp_path: Path) -> None:
    """changes, poll_interval, the hook secrets, deactivation_window, reconcile_schedule
    (issue 12): each checked, with what to do said."""
    app = load(tmp_path, app_with(changes="'both'", okta_hook_secret="'s3cret'",
                                  poll_interval="'10s'", deactivation_window="'2h'",
                                  reconcile_schedule="'cron:0 3 * * *'")).apps[0]
    assert (app.changes, app.polls, app.takes_hooks) == ("both", True, True)
    assert app.okta_hook_secret is not None and app.okta_hook_secret.reveal() == "s3cret"
    assert (app.poll_interval_s, app.deactivation_window_s) == (10, 7200)
    assert app.reconcile_schedule.cron == "0 3 * * *" and app.login_hook_secret is None
    (found,) = problems(tmp_path, app_with(changes="'hooks'"))
    assert found.startswith("app[0] (corp-okta).okta_hook_secret: is required when changes = "
                            "'hooks'"), found
    (found,) = problems(tmp_path, app_with(changes="'push'"))
    assert "changes" in found and "'poll'" in found, found
    (found,) = problems(tmp_path, app_with(poll_interval="'1s'"))
    assert found == "app[0] (corp-okta).poll_interval: must be at least 5s, got '1s'"
    (found,) = problems(tmp_path, app_with(deactivation_window="'10s'"))
    assert found == "app[0] (corp-okta).deactivation_window: must be at least 1m, got '10s'"
    (found,) = problems(tmp_path, app_with(reconcile_schedule="'daily'"))
    assert found.startswith("app[0] (corp-okta).reconcile_schedule: "), found


def test_serve_tls_and_inbox_settings_are_checked(tmp_path: Path) -> None:
    config = load(tmp_path, app_with() + "[serve]\ntls_cert = 'c.pem'\ntls_key = 'k.pem'\n"
                  "inbox_capacity = 500\n")
    assert config.tls == (tmp_path / "c.pem", tmp_path / "k.pem")
    assert config.inbox_capacity == 500
    (found,) = problems(tmp_path, app_with() + "[serve]\ntls_cert = 'c.pem'\n")
    assert found.startswith("serve: tls_cert and tls_key go together"), found
    (found,) = problems(tmp_path, app_with() + "[serve]\ninbox_capacity = 5\n")
    assert found.startswith("serve.inbox_capacity: "), found
