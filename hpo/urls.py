"""Storage and tracking URLs: resolve relative SQLite and journal paths, strip secrets before anything is logged."""
from __future__ import annotations

import re
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"
JOURNAL_PREFIX = "journal:///"  # Optuna's JournalStorage in a file: journal:///optuna.journal
# user:password@ in any scheme://user:password@host URL
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^/\s]*)@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL replaced by ``***``."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (``None`` for other URLs and in-memory databases)."""
    return _file_path(url, SQLITE_PREFIX)


def is_postgresql(url: str) -> bool:
    """``postgresql://`` (psycopg 3) or ``postgresql+driver://``."""
    return url.startswith(("postgresql://", "postgresql+"))


def journal_path(url: str) -> Path | None:
    """The journal file of a ``journal:///`` URL (``None`` for other URLs)."""
    return _file_path(url, JOURNAL_PREFIX)


def resolve_sqlite(url: str, cwd: Path | None = None) -> str:
    """Make a relative ``sqlite:///file.db`` or ``journal:///file.journal`` absolute against the working
    directory; other URLs unchanged.

    Resolving once, at start-up, means every later step (and every log line) names the same file.
    """
    for prefix in (SQLITE_PREFIX, JOURNAL_PREFIX):
        path = _file_path(url, prefix)
        if path is not None and not path.is_absolute():
            query = url[len(prefix):].partition("?")[1:]
            return prefix + str((cwd or Path.cwd()) / path) + "".join(query)
    return url


def _file_path(url: str, prefix: str) -> Path | None:
    # Like SQLAlchemy: scheme:///relative/path, scheme:////absolute/path.
    if not url.startswith(prefix):
        return None
    path = url[len(prefix):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)
