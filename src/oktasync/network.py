"""How the engine reaches each server: TLS trust, a client certificate, a forward proxy.

Decided here, once per server, from its ``NetworkConfig``, and handed to the HTTP layer as a
:class:`Route`: the engine opens no connection any other way. Certificate verification is
always on (there is no setting to switch it off): a ``ca_bundle`` adds CAs to the system's
trust store, it never replaces the checks. A proxy named in the config wins; without one the
standard ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` variables are honoured, as every
other tool on the machine does (read once per session here, never per request).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from yarl import URL

from oktasync.config import NetworkConfig
from oktasync.errors import UsageError
from oktasync.http import Route


def route_of(server: str, url: str, network: NetworkConfig,
             env: Mapping[str, str] | None = None) -> Route:
    """The route to ``server`` (named as the config names it, for messages) at ``url``: its
    proxy is decided here, once, for the session's every request (the server's requests all
    go to its own origin)."""
    proxy = network.proxy
    if proxy is not None and network.proxy_username is not None \
            and network.proxy_password is not None:
        # in the URL, as aiohttp takes them without its deprecated BasicAuth (the password is
        # a secret: masked wherever it could be printed)
        proxy = str(URL(proxy).with_user(network.proxy_username)
                    .with_password(network.proxy_password.reveal()))
    elif proxy is None:
        proxy = environment_proxy(url, os.environ if env is None else env)
    # plain http (loopback only, as the settings allow) has no certificate to check: the
    # system's trust store is not loaded for it
    tls = tls_context(server, network) if url.startswith("https:") else True
    return Route(ssl=tls, proxy=proxy)


def environment_proxy(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy ``HTTPS_PROXY`` / ``HTTP_PROXY`` (either case; the lower-case one wins, as
    curl has it) name for ``url``, unless ``NO_PROXY`` lists its host. Decided once per
    server: aiohttp's ``trust_env`` would read the environment on every request."""
    parts = urlsplit(url)
    scheme = parts.scheme
    proxy = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY")
    if not proxy or parts.hostname is None:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    if bypassed(parts.hostname, parts.port, no_proxy):
        return None
    return proxy


def bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` lists the host, as curl and Python read it: ``*``, a host name
    or address, a domain (``example.com`` and ``.example.com`` both cover its sub-domains),
    each optionally with ``:port``; compared case-insensitively."""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and (not entry_port.isdigit() or int(entry_port) != port):
            continue
        name = name.strip("[]").lstrip(".")
        if entry == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


def tls_context(server: str, network: NetworkConfig) -> ssl.SSLContext:
    """The system's trust store with verification and host names checked, plus the
    ``ca_bundle``'s CAs and the client certificate when configured. A file that cannot be
    used is the user's mistake (exit 2), named with the setting."""
    context = ssl.create_default_context()
    if network.ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(network.ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"{server}: ca_bundle {network.ca_bundle}: {_reason(exc)}; give "
                             "a PEM file of CA certificates") from None
    if network.client_cert is not None:
        try:
            context.load_cert_chain(str(network.client_cert),
                                    None if network.client_key is None
                                    else str(network.client_key))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"{server}: client_cert {network.client_cert} with client_key "
                f"{network.client_key}: {_reason(exc)}; give the PEM certificate and its "
                "unencrypted private key") from None
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or "not usable").replace("_", " ").lower()
    return (exc.strerror or type(exc).__name__).lower()
