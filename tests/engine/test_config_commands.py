"""`oktasync config check` and `oktasync config schema`, and the schema file editors read.

The CLI runs as a real subprocess (``python -m oktasync``), as an administrator runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from oktasync.config import load_config
from oktasync.settings import SECTIONS

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "config" / "oktasync.schema.json"
SECRETS = {"OKTA_API_TOKEN": "00okta-SECRET-value-Hn3", "JIRA_PAT": "jira-SECRET-pat-Lq8",
           "CONFLUENCE_PAT": "confluence-SECRET-pat-Zt5"}


def oktasync(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI; the environment is the caller's ``env`` only (plus PATH), never the test
    runner's, so a secret variable is set exactly when a test sets it."""
    done = subprocess.run(
        [sys.executable, "-m", "oktasync", *args], capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "OKTASYNC_LOG_FORMAT": "human", **(env or {})},
        check=False)
    return done.returncode, done.stdout, done.stderr


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


def schema_problems(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema())
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(document))


def read_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


# -- config schema -------------------------------------------------------------------------------


def test_the_schema_file_is_what_config_schema_prints() -> None:
    code, out, err = oktasync("config", "schema")
    assert (code, err) == (0, "")
    assert json.loads(out) == schema(), (
        "config/oktasync.schema.json is out of date: regenerate it with "
        "`.venv/bin/oktasync config schema > config/oktasync.schema.json`")
    assert out == SCHEMA_FILE.read_text(encoding="utf-8"), (
        "config/oktasync.schema.json differs in layout: regenerate it with "
        "`.venv/bin/oktasync config schema > config/oktasync.schema.json`")


def test_the_schema_is_a_valid_schema_that_documents_every_setting() -> None:
    document = schema()
    jsonschema.Draft202012Validator.check_schema(document)
    assert "$schema" not in document  # editors (taplo) pick their draft themselves
    for section, model in SECTIONS.items():
        properties = (document if not section else document["$defs"][model.__name__])["properties"]
        assert set(properties) == set(model.model_fields)
        for key, prop in properties.items():
            assert len(prop.get("description", "")) > 10, f"{section}.{key} has no description"


@pytest.mark.parametrize("name", ["example.toml", "demo.toml"])
def test_the_shipped_files_validate_against_the_schema(name: str) -> None:
    assert schema_problems(read_toml(REPO / "config" / name)) == []


def test_a_broken_file_fails_the_schema() -> None:
    document = read_toml(REPO / "config" / "demo.toml")
    app, jira = document["app"][0], document["target"]["jira"]
    app["okta_concurrency"] = 100
    app["schedul"] = "1h"
    app["group_types"] = ["OKTA_GROUP", "APP_GRUOP"]
    del app["targets"]
    jira["kind"] = "jira"
    jira["username"] = "bot"  # with a token, and without its password: two problems
    document["pipeline"] = {"queue_size": "big"}
    found = schema_problems(document)
    assert len(found) == 8, found
    joined = "\n".join(found)
    for where in ("app.0.okta_concurrency", "app.0.group_types.1", "target.jira.kind",
                  "pipeline.queue_size", "'schedul' was unexpected", "'targets' is a required",
                  "target.jira: "):
        assert where in joined, (where, found)


def test_the_editor_directive_is_accepted(tmp_path: Path) -> None:
    text = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    assert text.startswith("#:schema ./oktasync.schema.json\n")
    assert read_toml(REPO / "config" / "example.toml") is not None
    path = tmp_path / "oktasync.toml"
    path.write_text("#:schema https://example.com/oktasync.schema.json\n" + text, "utf-8")
    assert load_config(path, env={}).apps[0].name == "demo-okta"


# -- config check --------------------------------------------------------------------------------


def test_config_check_prints_every_setting_resolved_with_secrets_masked() -> None:
    code, out, err = oktasync("config", "check", "--config", "config/example.toml", env=SECRETS)
    assert (code, err) == (0, "")
    for secret in SECRETS.values():
        assert secret not in out
    assert 'okta_token = "********"  # from ${OKTA_API_TOKEN}' in out
    assert 'token = "********"  # from ${JIRA_PAT}' in out
    printed = tomllib.loads(out)  # the output is a TOML file itself
    app, jira = printed["app"][0], printed["target"]["jira"]
    # every setting that has a value, defaults filled in; the unset ones as comments
    assert set(app) | {"user_filter", "okta_app_id", "okta_hook_secret", "login_hook_secret",
                       "okta_client_id", "okta_private_key", "okta_key_id", "okta_proxy",
                       "okta_proxy_username", "okta_proxy_password", "okta_ca_bundle"} == \
        set(SECTIONS["app"].model_fields)
    assert set(jira) | {"username", "password", "username_regex", "username_replacement",
                        "user_filter", "required_groups", "okta_app_id", "proxy",
                        "proxy_username", "proxy_password", "ca_bundle", "client_cert",
                        "client_key", "key_expires"} == set(SECTIONS["target"].model_fields)
    assert "# username: not set" in out
    assert (app["okta_concurrency"], app["schedule"], jira["timeout_s"]) == (8, "1h", 60.0)
    assert printed["state"]["dir"] == str(REPO / "config" / "var" / "oktasync")  # resolved
    assert printed["pipeline"] == {"queue_size": 1000, "max_in_flight": 0}
    assert printed["serve"] == {"listen": "127.0.0.1:8787", "inbox_capacity": 100000,
                                "console": False}
    assert "# tls_cert: not set" in out


def test_config_check_names_a_file_secret_and_a_literal_one_without_their_values(
    tmp_path: Path,
) -> None:
    (tmp_path / "okta.token").write_text(SECRETS["OKTA_API_TOKEN"] + "\n", encoding="utf-8")
    config = tmp_path / "oktasync.toml"
    config.write_text(textwrap.dedent(f"""
        [[app]]
        name = "corp"
        okta_url = "https://example.okta.com/"
        okta_token = "file:okta.token"
        targets = ["jira"]
        [target.jira]
        kind = "jira-dc"
        url = "https://jira.example.com/jira/"
        username = "bot"
        password = "{SECRETS['JIRA_PAT']}"
        """), encoding="utf-8")
    code, out, err = oktasync("config", "check", "--config", str(config))
    # both files are readable by others (0644): each is named with the fix, not its secret
    assert (code, err) == (0, (
        f"oktasync: warning: {config} holds secrets written in it (target.jira.password) and "
        f"is readable by other users: chmod 600 {config}, or give them as \"${{VAR}}\" or "
        f'"file:/path"\noktasync: warning: app[0] (corp).okta_token: its file '
        f"{tmp_path / 'okta.token'} is readable by other users; chmod 600 "
        f"{tmp_path / 'okta.token'}\n"))
    assert SECRETS["OKTA_API_TOKEN"] not in out and SECRETS["JIRA_PAT"] not in out
    assert 'okta_token = "********"  # from file:okta.token' in out
    assert 'password = "********"  # written in the file' in out
    assert 'url = "https://jira.example.com/jira"' in out  # normalised as the sync uses it
    assert 'okta_url = "https://example.okta.com"' in out


def test_config_check_on_a_broken_file_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "oktasync.toml"
    config.write_text(textwrap.dedent(f"""
        [[app]]
        name = "corp-okta"
        okta_url = "http://example.okta.com"
        okta_token = "{SECRETS['OKTA_API_TOKEN']}"
        okta_concurrency = 100
        targets = ["jira", "jria"]
        schedul = "1h"

        [target.jira]
        kind = "jira-dc"
        url = "https://jira.example.com"
        token = "${{JIRA_PAT}}"
        password = "{SECRETS['JIRA_PAT']}"
        concurrency = 0

        [pipeline]
        queue_size = "big"
        """), encoding="utf-8")
    code, out, err = oktasync("config", "check", "--config", str(config))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"oktasync: configuration problems in {config}:",
        "  - target.jira.token: environment variable JIRA_PAT is not set",
        "  - target.jira.concurrency: must be an integer >= 1, got 0",
        "  - target.jira: set either token, or username and password, not both",
        "  - app[0] (corp-okta).okta_url: https is required except for loopback hosts",
        "  - app[0] (corp-okta).okta_concurrency: must be an integer <= 75, got 100",
        "  - app[0] (corp-okta).schedul: unknown setting (did you mean 'schedule'?)",
        "  - pipeline.queue_size: must be an integer from 1 to 1000000, got 'big'",
        "  - app[0] (corp-okta).targets[1]: no [target.jria] is defined (targets: jira) "
        "(did you mean 'jira'?)",
    ]
    for secret in SECRETS.values():
        assert secret not in err


def test_config_check_of_a_file_that_is_not_toml_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "oktasync.toml"
    config.write_text('[[app]]\nname = "a"\nokta_url = \n', encoding="utf-8")
    code, out, err = oktasync("config", "check", "--config", str(config))
    assert (code, out) == (2, "")
    assert "not valid TOML" in err and "line 3" in err
