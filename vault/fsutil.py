"""Durable file writes: private permissions, atomic replace, fsync of file and folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table so a rename survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_stream(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Write ``path`` through a temp file that replaces it only when the block succeeds."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync folder."""
    with atomic_stream(path, mode) as f:
        f.write(data)


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` (created 0600) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(folder: Path) -> None:
    """Create ``folder`` (and parents) and make it 0700."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
