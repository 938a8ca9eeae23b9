"""Secret values (API tokens, passwords) and where they come from.

A :class:`Secret` wraps the value so that no ``print``, log line, ``repr`` of a config object or
error message can show it by accident: every textual form is ``***`` and only :meth:`Secret.reveal`
gives the value, at the one place that puts it on the wire.

:func:`resolve_secret` turns a configuration value into a Secret. Its error messages name the
environment variable or the file that failed, never the value.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = ["Secret", "SecretError", "resolve_secret"]

_MASK: Final = "***"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FILE_PREFIX: Final = "file:"


class Secret:
    """A secret string whose every textual form is ``***``; use :meth:`reveal` to get the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call this only where it is sent to the server."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    def __str__(self) -> str:
        return _MASK

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        # constant-time, so comparing a presented token with the configured one leaks no timing
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __copy__(self) -> Secret:
        return self  # immutable; also keeps copy/deepcopy (dataclasses.asdict) off __reduce__

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

    def __reduce__(self) -> tuple[object, ...]:
        # pickling would write the value in clear into whatever stores the pickle
        raise TypeError("Secret values cannot be pickled")


class SecretError(ValueError):
    """A secret could not be resolved; the message names its source, never its value."""


def resolve_secret(text: str, env: Mapping[str, str], base_dir: Path) -> Secret:
    """Resolve ``${VAR}`` (environment), ``file:/path`` (read, stripped) or a literal value.

    A relative ``file:`` path is taken against ``base_dir`` (the config file's directory), so a
    config works the same whatever the current directory. An empty result is an error: an empty
    token would only fail later, at the first request, with a less helpful message.
    """
    if text.startswith("${"):
        match = _ENV_REF.fullmatch(text)
        if match is None:
            raise SecretError("malformed environment reference: write it as ${NAME}")
        name = match.group(1)
        if name not in env:
            raise SecretError(f"environment variable {name} is not set")
        value = env[name].strip()
        if not value:
            raise SecretError(f"environment variable {name} is empty")
        return Secret(value)
    if text.startswith(_FILE_PREFIX):
        return _read_secret_file(text[len(_FILE_PREFIX) :], base_dir)
    if not text.strip():
        raise SecretError("is empty")
    return Secret(text)


def _read_secret_file(raw_path: str, base_dir: Path) -> Secret:
    """Read a secret from a file; errors name the file and the OS reason, not the content."""
    if not raw_path:
        raise SecretError("file: needs a path, as in file:/run/secrets/okta-token")
    path = Path(raw_path).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(
            f"cannot read file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise SecretError(f"file {path} is not UTF-8 text") from None
    if not value:
        raise SecretError(f"file {path} is empty")
    return Secret(value)
