"""Google Timeline exported from the iOS app: ``location-history.json``.

A JSON list of segments, ``[{"startTime", "endTime", "visit" | "activity" | "timelinePath"}]``,
holding the same data as Android's ``Timeline.json`` with other spellings: numbers are strings
(``"0.9"``), coordinates are ``geo:48.137100,11.575400`` URIs, the place id is ``placeID``, and
path points give minutes after the segment start instead of a time. The segments are read by
:func:`vault.importers.google_timeline.segment_rows`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import Any, ClassVar

from vault.importers.base import Importer, Row, Source, register
from vault.importers.google_geo import import_items
from vault.importers.google_timeline import segment_rows

SOURCE = "Google Timeline (iOS)"
_LIST_OF_OBJECTS = re.compile(rb"^(?:\xef\xbb\xbf)?\s*\[\s*\{")


def _convert(_prefix: str, segment: dict[str, Any]) -> Iterator[Row]:
    return segment_rows(segment, SOURCE)


@register
class GoogleIosImporter(Importer):
    """iOS Google Maps Timeline export -> visits, trips and points."""

    name: ClassVar[str] = "google_ios"
    label: ClassVar[str] = "Google Timeline (iOS location-history.json)"

    @classmethod
    def sniff(cls, source: Source, head: bytes) -> bool:
        """A JSON list whose first object has start/end times and ``geo:`` coordinates."""
        if not _LIST_OF_OBJECTS.match(head):
            return False
        first = head.split(b"}", 1)[0]  # up to the first closing brace: the first object's start
        return (
            b'"startTime"' in head
            and b'"endTime"' in head
            and b'"geo:' in head
            and (b'"visit"' in first or b'"activity"' in first or b'"timelinePath"' in first)
        )

    def rows(self, source: Source) -> Iterator[Row]:
        """Yield the rows of every segment in the list."""
        if source.head(64).removeprefix(codecs.BOM_UTF8).lstrip()[:1] != b"[":
            raise source.refuse("expected a JSON list of timeline segments")
        return import_items(source, ["item"], _convert)
