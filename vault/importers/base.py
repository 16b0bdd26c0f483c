"""The importer contract: typed rows, input sources, and the format registry.

Every format module under ``vault.importers`` defines one :class:`Importer` subclass and
registers it with :func:`register`. An importer is a generator of :class:`Row` objects read
from a :class:`Source`; one bulk writer (``vault.writer``) stores them in one transaction.
Importers never touch the database and never buffer a whole file: they stream.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from vault.errors import ImportRefused


@dataclass(slots=True)
class Row:
    """One record for one dataset.

    Times are UTC seconds since the epoch; ``offset`` keeps the original UTC offset in minutes
    where the source had one. ``key`` is the natural key: two rows with the same dataset and key
    are the same record, so re-importing adds nothing twice. When ``key`` is None the writer
    derives it from (start, end, value, text, unit, lat, lon, source).
    """

    dataset: str
    start: float
    end: float | None = None
    offset: int | None = None
    value: float | None = None
    text: str | None = None
    unit: str | None = None
    lat: float | None = None
    lon: float | None = None
    source: str | None = None
    extra: dict[str, Any] | None = field(default=None)
    key: str | None = None


class Source:
    """A named binary input: a file on disk or a member of an archive.

    ``name`` is what error messages show (``export.zip:apple_health_export/export.xml``).
    ``open()`` returns a fresh binary stream; ``size`` is its uncompressed size in bytes.
    """

    def __init__(
        self, name: str, opener: Callable[[], IO[bytes]], size: int, member: str | None = None
    ) -> None:
        self.name = name
        self.member = member  # path inside the archive, None for a plain file
        self._opener = opener
        self.size = size
        self.consumed = 0  # bytes read so far, for progress

    @classmethod
    def from_path(cls, path: Path) -> Source:
        """A source reading a plain file."""
        return cls(str(path), lambda: open(path, "rb"), path.stat().st_size)

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Source:
        """A source over bytes in memory (tests, small archive members)."""
        return cls(name, lambda: io.BytesIO(data), len(data))

    def open(self) -> IO[bytes]:
        """Open the source for reading; reads are counted in ``consumed``."""
        return _CountingReader(self._opener(), self)

    def head(self, n: int = 4096) -> bytes:
        """The first ``n`` bytes, for format detection."""
        with self._opener() as f:
            return f.read(n)

    def refuse(self, problem: str) -> ImportRefused:
        """An :class:`ImportRefused` naming this source."""
        return ImportRefused(self.name, problem)


class _CountingReader(io.RawIOBase):
    """Wraps a binary stream and counts bytes read into the owning Source."""

    def __init__(self, raw: IO[bytes], owner: Source) -> None:
        self._raw = raw
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        self._owner.consumed += n
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._owner.consumed += len(data)
        return data

    def close(self) -> None:
        self._raw.close()
        super().close()


class Importer:
    """One input format. Subclasses set ``name`` and implement ``sniff`` and ``rows``."""

    name: ClassVar[str] = ""
    #: human label shown in `tessera import --help` and the GUI
    label: ClassVar[str] = ""

    @classmethod
    def sniff(cls, source: Source, head: bytes) -> bool:
        """True when ``source`` (whose first bytes are ``head``) looks like this format."""
        raise NotImplementedError

    @classmethod
    def companions(cls, member: str, members: list[str]) -> set[str]:
        """Archive members that this importer reads itself when it imports ``member``.

        The planner will not import them separately (Apple Health's ``workout-routes/*.gpx``).
        """
        return set()

    def __init__(self, dataset: str | None = None) -> None:
        # Only some formats (preferences) take a dataset name from the user.
        self.dataset = dataset
        self._members: dict[str, Source] | None = None

    def attach_archive(self, main: Source, members: dict[str, Source]) -> None:
        """Tell the importer that ``main`` came from an archive holding ``members``."""
        self._members = members

    def related(self, main: Source, relpath: str) -> Source | None:
        """A file referenced by ``main`` (e.g. '/workout-routes/route_1.gpx'), or None.

        Resolved against the archive's members when importing a zip, otherwise against the
        folder of ``main`` on disk. Never escapes that folder.
        """
        rel = relpath.lstrip("/")
        if ".." in Path(rel).parts:
            return None
        if self._members is not None:
            base = (main.member or "").rpartition("/")[0]
            wanted = f"{base}/{rel}" if base else rel
            return self._members.get(wanted)
        candidate = Path(main.name).parent / rel
        return Source.from_path(candidate) if candidate.is_file() else None

    def rows(self, source: Source) -> Iterator[Row]:
        """Yield the rows of ``source``; raise ``source.refuse(...)`` on bad input."""
        raise NotImplementedError


REGISTRY: dict[str, type[Importer]] = {}


def register(cls: type[Importer]) -> type[Importer]:
    """Class decorator adding an importer to the registry under its ``name``."""
    REGISTRY[cls.name] = cls
    return cls
