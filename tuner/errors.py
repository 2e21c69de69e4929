"""One error type for everything the user can get wrong (YAML, data, CLI).

The CLI prints it as a single line and exits with code 2; nothing else catches it.
"""


class TunerError(Exception):
    """A user-facing error: `str(err)` is one line naming the file and key or line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


def where(file: str | None, key: str | None = None, line: int | None = None) -> str:
    """'file:line: key' prefix for error messages (each part optional)."""
    loc = str(file) if file else "<config>"
    if line is not None:
        loc += f":{line}"
    if key:
        loc += f": {key}"
    return loc
