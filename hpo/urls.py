"""Storage and tracking URLs: resolve relative SQLite paths and strip secrets before anything is logged."""
from __future__ import annotations

import re
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"
# user:password@ in any scheme://user:password@host URL
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^/\s]*)@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL replaced by ``***``."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (``None`` for other URLs and in-memory databases)."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    path = url[len(SQLITE_PREFIX):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def resolve_sqlite(url: str, cwd: Path | None = None) -> str:
    """Make a relative ``sqlite:///file.db`` absolute against the working directory; other URLs unchanged.

    Resolving once, at start-up, means every later step (and every log line) names the same file.
    """
    path = sqlite_path(url)
    if path is None or path.is_absolute():
        return url
    query = url[len(SQLITE_PREFIX):].partition("?")[1:]
    return SQLITE_PREFIX + str((cwd or Path.cwd()) / path) + "".join(query)
