"""Safe reading of zip archives (Apple Health export.zip, Google Takeout zips).

Refuses members whose names escape the archive (absolute paths, ``..``, drive letters) and
archives whose members would inflate past a limit, before anything is read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from vault.importers.base import Source

DEFAULT_MAX_INFLATE = 4 * 1024**3  # 4 GiB


def _unsafe_name(name: str) -> bool:
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in PurePosixPath(name).parts


def zip_sources(path: Path, max_inflate: int = DEFAULT_MAX_INFLATE) -> list[Source]:
    """Check ``path`` as a zip archive and return one Source per regular member.

    Raises ImportRefused naming the archive (and member) when a name escapes the archive, when
    the declared inflated size of all members exceeds ``max_inflate``, or when the archive is
    damaged.
    """
    outer = Source.from_path(path)
    try:
        archive = zipfile.ZipFile(path)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise outer.refuse(f"not a readable zip archive ({exc})") from None
    total = 0
    for info in infos:
        if _unsafe_name(info.filename):
            raise outer.refuse(f"member {info.filename!r} has an unsafe path (path traversal)")
        total += info.file_size
        if total > max_inflate:
            raise outer.refuse(
                f"members inflate to more than the limit of {max_inflate} bytes (zip bomb?)"
            )
        if info.compress_size and info.file_size / info.compress_size > 10_000:
            raise outer.refuse(f"member {info.filename!r} has a suspicious compression ratio")
    sources = []
    for info in infos:
        if info.is_dir():
            continue
        sources.append(
            Source(
                f"{path}:{info.filename}",
                # bind info now; ZipFile.open is thread-unsafe only across concurrent reads
                lambda info=info: archive.open(info),
                info.file_size,
                member=info.filename,
            )
        )
    return sources


def member_name(source: Source) -> str:
    """The member path inside its archive (or the file path for a plain file)."""
    return source.member if source.member is not None else source.name


def file_name(source: Source) -> str:
    """The bare file name of a plain file or an archive member."""
    return PurePosixPath(source.member).name if source.member else Path(source.name).name
