"""One error type for everything the user can get wrong (YAML, data, CLI).

The CLI prints it as a single line and exits with code 2; nothing else catches it.
"""

import re

MAX_MESSAGE = 300  # a user-facing error line never grows past this, whatever the input


class TunerError(Exception):
    """A user-facing error: `str(err)` is one line naming the file and key or line."""

    def __init__(self, message: str):
        super().__init__(clamp(message))


def clamp(message: str, limit: int = MAX_MESSAGE) -> str:
    """One line of at most `limit` chars: a 10 MB bad value must not become a 10 MB error line."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def excerpt(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` chars: how messages quote user input (a line, a field, an id)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_SECRET = re.compile(r"(://)([^/@:]+)(:[^/@]*)?@")


_SECRET_QUERY = re.compile(r"([?&](?:access_key|secret_key|session_token|password|token)=)[^&#]*", re.I)


def redact(uri: str) -> str:
    """A URI safe to print: user:token@ becomes ***@, and so do keys in its query (?secret_key=***)."""
    return _SECRET_QUERY.sub(r"\1***", _SECRET.sub(r"\1***@", uri))


def where(file: str | None, key: str | None = None, line: int | None = None) -> str:
    """'file:line: key' prefix for error messages (each part optional)."""
    loc = str(file) if file else "<config>"
    if line is not None:
        loc += f":{line}"
    if key:
        loc += f": {key if len(key) <= 80 else key[:77] + '...'}"  # a key can be user input too
    return loc
