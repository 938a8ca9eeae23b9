"""scim2-server on 127.0.0.1 and an ephemeral port, run as a script by
``tests.engine.scimfixtures.scim_server`` in a process of its own.

Why not the ``scim2-server`` command: it listens on the port it is given and prints that
number, so with ``--port 0`` nobody learns the port the kernel chose; a fixed port would race
with other tests. This script builds the same application (the schemas, resource types and
service provider configuration scim2-server serves by default: RFC 7643's User and Group,
filter, sort, PATCH, ETags, startIndex/count paging), binds port 0, and writes the port it got
to ``--port-file`` (a line ending in a newline, written once listening). It answers every
request without authentication: the fault proxy in front of it checks the bearer token, as
Atlassian does. SIGINT or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from scim2_models import ScimProvider
from scim2_server.applications.wsgi import WSGIApplication
from scim2_server.memory import InMemoryStorage
from scim2_server.service import ScimService
from scim2_server.testserver.cli import ThreadingWSGIServer
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)


class QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a 250-user test would write a line per request."""

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the line."""


def build_application() -> WSGIApplication:
    """scim2-server's default service over an in-memory storage, as its command builds it."""
    provider = ScimProvider.from_discovery(
        load_default_schemas().values(),
        load_default_resource_types().values(),
        config=load_default_service_provider_config(),
    )
    secret = os.environ.get("SCIM2_SERVER_SECRET") or os.urandom(16).hex()
    service = ScimService(provider, secret=secret)
    return WSGIApplication(InMemoryStorage(), provider, service=service)


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends ``serve_forever`` as SIGINT does."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; the port goes to ``--port-file`` once listening."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    with make_server("127.0.0.1", 0, build_application(), server_class=ThreadingWSGIServer,
                     handler_class=QuietHandler) as server:
        partial = args.port_file.with_suffix(".tmp")
        partial.write_text(f"{server.server_port}\n")
        partial.replace(args.port_file)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever(poll_interval=0.1)
    sys.exit(0)


if __name__ == "__main__":
    main()
