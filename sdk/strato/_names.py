"""The one rule for model names, versions and aliases, used wherever a name arrives.

A name is 1-128 ASCII letters, digits, `.`, `_` or `-`, starting with a letter or digit (so never
`.`, `..`, a path, an empty string or a string with a trailing newline). A version is a name too;
a numeric version is ASCII digits only (`²` is a name character nowhere).
"""

from __future__ import annotations

import re

from ._errors import ModelNotFound, StratoError

__all__ = ["MAX_NAME", "check_name", "is_name", "numeric_version"]

MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_name(text: object) -> bool:
    """Whether `text` is a valid model name, version or alias."""
    return isinstance(text, str) and len(text) <= MAX_NAME and _NAME.fullmatch(text) is not None


def check_name(
    text: object, what: str = "name", *, error: type[StratoError] = ModelNotFound
) -> str:
    """`text` if it is a valid name, else `error` (default `ModelNotFound`) saying which rule."""
    if not is_name(text):
        raise error(
            f"invalid model {what} {text!r}: expected 1-{MAX_NAME} ASCII letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return str(text)


def numeric_version(version: str) -> int | None:
    """The number of a version made of ASCII digits only, else None."""
    return int(version) if version.isascii() and version.isdigit() else None
