"""A proxy.py plugin that writes down what the proxy did, for ``netfixtures.forward_proxy``.

proxy.py loads it with ``--plugins tests.engine.proxy_recorder.RecordingPlugin`` (in the
proxy's own process: this module imports proxy.py, never the engine) and it appends one JSON
object a line to the file named by ``$OKTASYNC_TEST_PROXY_RECORD``:

* ``{"kind": "request", "method": "GET", "url": "http://127.0.0.1:8080/api/v1/users"}``
  for each plain-HTTP request relayed (keep-alive ones included);
* ``{"kind": "connect", "target": "127.0.0.1:8443"}`` for each CONNECT tunnel opened;
* ``{"kind": "upstream", "target": "127.0.0.1:8443", "local_port": 50123}`` for each TCP
  connection the proxy opened to a server, with the port it came from: the peer port that
  server sees, so a test can match every connection a server served to the proxy.

Requests the proxy refuses (407 without credentials) reach no plugin hook and are not written.
Each line is one ``write`` to a file opened with ``O_APPEND``, so lines from the proxy's
processes and threads do not interleave.
"""

from __future__ import annotations

import json
import os
from typing import Any

from proxy.core.connection.server import TcpServerConnection
from proxy.http.parser import HttpParser
from proxy.http.proxy import HttpProxyBasePlugin

RECORD_ENV = "OKTASYNC_TEST_PROXY_RECORD"


def record(entry: dict[str, Any]) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else value


class RecordingPlugin(HttpProxyBasePlugin):
    """Records each request line (plain HTTP) and each CONNECT the proxy relays."""

    def handle_client_request(self, request: HttpParser) -> HttpParser | None:
        host, port = _text(request.host), request.port
        if request.is_https_tunnel:
            record({"kind": "connect", "target": f"{host}:{port}"})
        else:
            path = _text(request.path) or "/"
            record({"kind": "request", "method": _text(request.method),
                    "url": f"http://{host}:{port}{path}"})
        return request


# The plugin hooks never see the upstream socket, so the one place every upstream TCP
# connection is made is wrapped: the connection is recorded with its local port once open.
_original_connect = TcpServerConnection.connect


def _recording_connect(self: TcpServerConnection, addr: Any = None,
                       source_address: Any = None) -> None:
    _original_connect(self, addr, source_address)
    host, port = self.addr[0], self.addr[1]
    record({"kind": "upstream", "target": f"{_text(host)}:{port}",
            "local_port": self.connection.getsockname()[1]})


if not getattr(TcpServerConnection.connect, "_oktasync_recording", False):
    _recording_connect._oktasync_recording = True  # type: ignore[attr-defined]
    TcpServerConnection.connect = _recording_connect  # type: ignore[method-assign]
