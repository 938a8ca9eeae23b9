"""An atlassian-scim target's settings, checked when the file loads: its API key, the
settings only it takes, its e-mail usernames, and the warning before its key expires."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from oktasync.config import Config, ConfigError, load_config
from oktasync.engine import key_expiry_notes

APP = """
[[app]]
name = "corp"
okta_url = "https://example.okta.com"
okta_token = "${OKTA_API_TOKEN}"
targets = ["cloud"]
"""
ENV = {"OKTA_API_TOKEN": "00okta-secret-value-XYZ", "SCIM_KEY": "scim-key-secret-value-ABC"}


def load(tmp_path: Path, target: str) -> Config:
    path = tmp_path / "oktasync.toml"
    path.write_text(textwrap.dedent(APP + target), encoding="utf-8")
    path.chmod(0o600)
    return load_config(path, env=ENV)


def problems(tmp_path: Path, target: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, target)
    return caught.value.problems


CLOUD = """
[target.cloud]
kind = "atlassian-scim"
url = "https://api.atlassian.com/scim/directory/0a1b2c3d"
token = "${SCIM_KEY}"
"""


def test_a_cloud_directory_keys_accounts_by_email_unless_told_otherwise(tmp_path: Path) -> None:
    cloud = load(tmp_path, CLOUD + 'verified_domains = ["Example.com", "@corp.example"]\n'
                 'key_expires = "2027-01-15"\n').targets["cloud"]
    assert (cloud.kind, cloud.username_from) == ("atlassian-scim", "email")
    assert cloud.verified_domains == ("example.com", "corp.example")
    assert cloud.key_expires == date(2027, 1, 15)
    assert load(tmp_path, CLOUD + 'username_from = "login"\n').targets["cloud"].username_from \
        == "login"


def test_cloud_only_settings_and_the_api_key_are_checked(tmp_path: Path) -> None:
    dc = ('[target.cloud]\nkind = "jira-dc"\nurl = "https://jira.example.com"\n'
          'token = "${SCIM_KEY}"\nverified_domains = ["example.com"]\n')
    assert problems(tmp_path, dc) == [
        'target.cloud.verified_domains: is for kind = "atlassian-scim" only']
    basic = CLOUD.replace('token = "${SCIM_KEY}"', 'username = "a"\npassword = "${SCIM_KEY}"')
    assert problems(tmp_path, basic) == [
        "target.cloud: an atlassian-scim target authenticates with its directory's API key: "
        "set token, not username and password"]
    assert problems(tmp_path, CLOUD + 'key_expires = "15/01/2027"\n') == [
        "target.cloud.key_expires: must be a date, YYYY-MM-DD, got '15/01/2027'"]


@pytest.mark.parametrize(("today", "expected"), [
    (date(2026, 12, 1), []),
    (date(2026, 12, 16), ["cloud: its API key expires on 2027-01-15, in 30 days: create a new "
                          "one (admin.atlassian.com → Security → Identity providers → the "
                          "directory) and update token and key_expires"]),
    (date(2027, 1, 14), ["cloud: its API key expires on 2027-01-15, in 1 day: create a new "
                         "one (admin.atlassian.com → Security → Identity providers → the "
                         "directory) and update token and key_expires"]),
    (date(2027, 2, 1), ["cloud: its API key expired on 2027-01-15: create a new one "
                        "(admin.atlassian.com → Security → Identity providers → the "
                        "directory) and update token and key_expires"]),
])
def test_every_run_warns_from_30_days_before_the_key_expires(
        tmp_path: Path, today: date, expected: list[str]) -> None:
    config = load(tmp_path, CLOUD + 'key_expires = "2027-01-15"\n')
    assert key_expiry_notes(config.apps[0], config, today) == expected
