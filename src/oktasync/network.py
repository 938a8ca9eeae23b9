"""How the engine reaches each server: TLS trust, a client certificate, a forward proxy.

Decided here, once per server, from its ``NetworkConfig``, and handed to the HTTP layer as a
:class:`Route`: the engine opens no connection any other way. Certificate verification is
always on (there is no setting to switch it off): a ``ca_bundle`` adds CAs to the system's
trust store, it never replaces the checks. A proxy named in the config wins; without one the
standard ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` variables are honoured (aiohttp's
``trust_env``), as every other tool on the machine does.
"""

from __future__ import annotations

import ssl

from yarl import URL

from oktasync.config import NetworkConfig
from oktasync.errors import UsageError
from oktasync.http import Route


def route_of(server: str, network: NetworkConfig) -> Route:
    """The route to ``server`` (named as the config names it, for messages)."""
    proxy = network.proxy
    if proxy is not None and network.proxy_username is not None \
            and network.proxy_password is not None:
        # in the URL, as aiohttp takes them without its deprecated BasicAuth (the password is
        # a secret: masked wherever it could be printed)
        proxy = str(URL(proxy).with_user(network.proxy_username)
                    .with_password(network.proxy_password.reveal()))
    return Route(ssl=tls_context(server, network), proxy=proxy,
                 trust_env=network.proxy is None)


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
