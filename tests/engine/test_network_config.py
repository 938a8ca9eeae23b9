"""The settings of enterprise networks, checked when the file loads: the Okta service app
(okta_auth, okta_client_id, okta_private_key, okta_key_id), proxies, CA bundles and client
certificates, and the warning for secrets other users can read. Each mistake is one line that
names the setting and what to do; no key, password or token is ever in it."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from oktasync.config import Config, ConfigError, load_config
from oktasync.network import environment_proxy

ENV = {"OKTA_API_TOKEN": "00okta-secret-value-XYZ", "JIRA_PAT": "jira-pat-secret-value-QRS",
       "PROXY_PASSWORD": "proxy-secret-value-KLM"}
TARGET = """
[target.jira]
kind = "jira-dc"
url = "https://jira.example.com"
token = "${JIRA_PAT}"
"""


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
           password: bytes | None = None) -> str:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption).decode()


def app(extra: str, auth: str = 'okta_token = "${OKTA_API_TOKEN}"') -> str:
    return f"""
[[app]]
name = "corp"
okta_url = "https://example.okta.com"
{auth}
targets = ["jira"]
{extra}
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "oktasync.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    path.chmod(mode)
    return path


def load(tmp_path: Path, text: str, mode: int = 0o600) -> Config:
    return load_config(write(tmp_path, text, mode), env=ENV)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return caught.value.problems


def oauth(key_file: str, extra: str = "") -> str:
    return (f'okta_auth = "oauth"\nokta_client_id = "0oa-service-app"\n'
            f'okta_private_key = "file:{key_file}"\n{extra}')


# -- the Okta service app -------------------------------------------------------------------


def test_a_service_app_loads_with_the_scopes_its_reads_need(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text(pem_of(ec.generate_private_key(ec.SECP256R1())))
    config = load(tmp_path, app('okta_app_id = "0oa-assigned"', oauth("key.pem",
                                                                       'okta_key_id = "k1"'))
                  + TARGET)
    grant = config.apps[0].okta_oauth
    assert grant is not None and config.apps[0].okta_token is None
    assert (grant.client_id, grant.key_id) == ("0oa-service-app", "k1")
    assert grant.scopes == ("okta.users.read", "okta.groups.read", "okta.logs.read",
                            "okta.apps.read")
    key_lines = [line for line in grant.private_key.reveal().splitlines() if len(line) >= 16]
    assert key_lines and set(key_lines) <= set(config.secret_values())  # each line redacted


def test_service_app_settings_go_together_and_exclude_the_token(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text(pem_of(rsa.generate_private_key(65537, 2048)))
    assert problems(tmp_path, app("", 'okta_auth = "oauth"') + TARGET) == [
        'app[0] (corp).okta_client_id: is required when okta_auth = "oauth"',
        'app[0] (corp).okta_private_key: is required when okta_auth = "oauth"']
    both = 'okta_token = "${OKTA_API_TOKEN}"\n' + oauth("key.pem")
    assert problems(tmp_path, app("", both) + TARGET) == [
        'app[0] (corp).okta_token: is set but okta_auth = "oauth": remove it (an app uses one '
        "way to authenticate)"]
    stray = 'okta_token = "${OKTA_API_TOKEN}"\nokta_client_id = "0oa-x"'
    assert problems(tmp_path, app("", stray) + TARGET) == [
        'app[0] (corp).okta_client_id: is set but okta_auth is "token": set okta_auth = '
        '"oauth" to use a service app, or remove it']


@pytest.mark.parametrize(("content", "expected"), [
    ("not a key at all", "is not a PEM private key (expected a -----BEGIN PRIVATE KEY----- "
                         "block, RSA or EC)"),
    ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
     "is not a readable PEM private key (RSA or EC)"),
    ("encrypted", "is an encrypted private key: give the key unencrypted (and keep its file "
                  "0600)"),
    ("rsa1024", "is an RSA key shorter than 2048 bits"),
    ("secp256k1", "is an EC key on secp256k1: Okta takes P-256, P-384 or P-521"),
])
def test_a_key_that_cannot_sign_is_named_without_its_content(
        tmp_path: Path, content: str, expected: str) -> None:
    text = {"encrypted": lambda: pem_of(ec.generate_private_key(ec.SECP256R1()), b"pw"),
            "rsa1024": lambda: pem_of(rsa.generate_private_key(65537, 1024)),
            "secp256k1": lambda: pem_of(ec.generate_private_key(ec.SECP256K1())),
            }.get(content, lambda: content)()
    (tmp_path / "key.pem").write_text(text)
    found = problems(tmp_path, app("", oauth("key.pem")) + TARGET)
    assert found == [f"app[0] (corp).okta_private_key: {expected}"]
    assert all(line not in found[0] for line in text.splitlines()[1:-1] if len(line) > 8)


# -- proxies ----------------------------------------------------------------------------------


def test_proxies_load_with_their_credentials_as_secrets(tmp_path: Path) -> None:
    text = app('okta_proxy = "http://proxy.corp:3128/"') + TARGET + (
        'proxy = "http://proxy.corp:3128"\nproxy_username = "svc"\n'
        'proxy_password = "${PROXY_PASSWORD}"\n')
    config = load(tmp_path, text)
    assert config.apps[0].okta_network.proxy == "http://proxy.corp:3128"
    network = config.targets["jira"].network
    assert (network.proxy, network.proxy_username) == ("http://proxy.corp:3128", "svc")
    assert ENV["PROXY_PASSWORD"] in config.secret_values()


def test_proxy_mistakes_name_the_setting(tmp_path: Path) -> None:
    text = app('okta_proxy = "http://user:pw@proxy.corp:3128"') + TARGET + (
        'proxy = "socks5://proxy.corp:1080"\nproxy_username = "svc"\n')
    found = problems(tmp_path, text)
    assert found == [
        "target.jira.proxy: must be http://HOST:PORT (or https://), such as "
        "http://proxy.example.com:3128",
        "target.jira.proxy_password: is required with proxy_username",
        "app[0] (corp).okta_proxy: must not contain credentials: set proxy_username and "
        "proxy_password (a secret) instead"]
    assert "pw@" not in "\n".join(found)
    lonely = app('okta_proxy_username = "svc"\nokta_proxy_password = "${PROXY_PASSWORD}"')
    assert problems(tmp_path, lonely + TARGET) == [
        "app[0] (corp).okta_proxy: is required with okta_proxy_username and "
        "okta_proxy_password (credentials of a proxy from the environment go in its URL there)"]


# -- TLS ---------------------------------------------------------------------------------------


def test_ca_bundles_and_client_certificates_are_checked_when_the_file_loads(
        tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = ca.issue_cert("oktasync-client")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client-key.pem"))
    good = app('okta_ca_bundle = "ca.pem"') + TARGET + (
        'ca_bundle = "ca.pem"\nclient_cert = "client.pem"\nclient_key = "client-key.pem"\n')
    (tmp_path / "client-key.pem").chmod(0o644)
    key_file = tmp_path / "client-key.pem"
    assert load(tmp_path, good).warnings == (
        f"target.jira.client_key: its file {key_file} is readable by other users; "
        f"chmod 600 {key_file}",)
    key_file.chmod(0o600)
    network = load(tmp_path, good).targets["jira"].network
    assert network.ca_bundle == tmp_path / "ca.pem"
    assert network.client_key == tmp_path / "client-key.pem"

    (tmp_path / "notes.txt").write_text("hello")
    bad = app('okta_ca_bundle = "missing.pem"') + TARGET + (
        'ca_bundle = "notes.txt"\nclient_cert = "client.pem"\n')
    assert problems(tmp_path, bad) == [
        f"target.jira.ca_bundle: {tmp_path / 'notes.txt'} holds no PEM CA certificates "
        "(-----BEGIN CERTIFICATE-----)",
        "target.jira.client_key: is required with client_cert",
        f"app[0] (corp).okta_ca_bundle: cannot read {tmp_path / 'missing.pem'}: No such file "
        "or directory"]


# -- secrets that others can read --------------------------------------------------------------


def test_literal_secrets_in_a_file_others_can_read_are_warned_about(tmp_path: Path) -> None:
    text = app("", 'okta_token = "00literal-okta-token"') + TARGET
    warned = load(tmp_path, text, mode=0o644).warnings
    assert warned == (
        f"{tmp_path / 'oktasync.toml'} holds secrets written in it (app[0] (corp).okta_token) "
        f"and is readable by other users: chmod 600 {tmp_path / 'oktasync.toml'}, or give "
        'them as "${VAR}" or "file:/path"',)
    assert "00literal-okta-token" not in warned[0]
    assert load(tmp_path, text, mode=0o600).warnings == ()
    assert load(tmp_path, app("") + TARGET, mode=0o644).warnings == ()  # only ${VAR}s in it


def test_a_secret_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text(pem_of(ec.generate_private_key(ec.SECP256R1())))
    os.chmod(key, 0o644)
    warned = load(tmp_path, app("", oauth("key.pem")) + TARGET).warnings
    assert warned == (f"app[0] (corp).okta_private_key: its file {key} is readable by other "
                      f"users; chmod 600 {key}",)
    key.chmod(0o600)
    assert load(tmp_path, app("", oauth("key.pem")) + TARGET).warnings == ()


@pytest.mark.parametrize(("url", "env", "expected"), [
    ("https://jira.corp.example", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
    ("https://jira.corp.example", {"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2"},
     "http://a:1"),
    ("https://jira.corp.example", {"HTTP_PROXY": "http://p:3128"}, None),  # the other scheme
    ("http://127.0.0.1:8080", {"HTTP_PROXY": "http://p:3128"}, "http://p:3128"),
    ("https://jira.corp.example", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".example"},
     None),
    ("https://jira.corp.example", {"HTTPS_PROXY": "http://p:3128", "no_proxy": "corp.example"},
     None),
    ("https://jira.corp.example:8443",
     {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "jira.corp.example:443"}, "http://p:3128"),
    ("https://jira.corp.example:8443",
     {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "localhost, jira.corp.example:8443"}, None),
    ("https://notcorp.example", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "corp.example"},
     "http://p:3128"),
    ("https://jira.corp.example", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, None),
])
def test_the_environments_proxy_is_read_as_curl_reads_it(
        url: str, env: dict[str, str], expected: str | None) -> None:
    assert environment_proxy(url, env) == expected
