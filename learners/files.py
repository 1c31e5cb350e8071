"""Files written atomically: to a temporary file beside the target, flushed to disk, then renamed over it, so
that a reader, a kill or a full disk never leaves a partial file under the target's name."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` with ``write(handle)``; on any error the target is as it was and no temporary file is left.

    Raises:
        OSError: the folder is missing or not writable, or the disk is full.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; caches and models may be shared
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
