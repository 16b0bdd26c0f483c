"""Google Takeout ``Records.json``: the raw location history, one record per position fix.

``{"locations": [{"latitudeE7", "longitudeE7", "accuracy", "timestamp" | "timestampMs", ...}]}``
Files often exceed a gigabyte, so the list is streamed item by item. Every record becomes a
``location.points`` row. Records that carry no position at all (Google writes some holding only
activity guesses) are skipped and counted in ``skipped``; a record with half a position, an
impossible one or no time is refused, naming its index.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from vault.importers.base import Importer, Row, Source, register
from vault.importers.google_geo import (
    e7_position,
    first_key,
    import_lists,
    optional_number,
    takeout_time,
)
from vault.importers.location import RecordProblem, point_row

SOURCE = "Google Takeout Records.json"

# Record field -> extra key; copied as they are when present.
_EXTRA_FIELDS = (
    ("altitude", "altitude"),
    ("verticalAccuracy", "vertical_accuracy"),
    ("velocity", "velocity"),
    ("heading", "heading"),
    ("source", "provider"),
    ("deviceTag", "device_tag"),
    ("platformType", "platform"),
    ("formFactor", "form_factor"),
)


def activity_guesses(readings: Any) -> dict[str, Any] | None:
    """The first activity reading of a record as {type: confidence}, or None."""
    try:
        guesses = readings[0]["activity"] if readings else ()
        return {guess["type"]: guess.get("confidence") for guess in guesses} or None
    except (TypeError, KeyError, AttributeError):
        raise RecordProblem("activity is not a list of readings with typed guesses") from None


@register
class GoogleRecordsImporter(Importer):
    """Google Takeout ``Records.json`` -> ``location.points``."""

    name: ClassVar[str] = "google_records"
    label: ClassVar[str] = "Google Location History (Records.json)"

    @classmethod
    def sniff(cls, source: Source, head: bytes) -> bool:
        """A JSON object whose first key is a "locations" list of E7 records (or empty)."""
        if first_key(head) != ("locations", "["):
            return False
        rest = head.split(b"[", 1)[1].lstrip()
        return rest.startswith(b"]") or b"E7" in head

    def __init__(self, dataset: str | None = None) -> None:
        super().__init__(dataset)
        self.skipped = 0  # records without any position

    def rows(self, source: Source) -> Iterator[Row]:
        """Yield one ``location.points`` row per located record."""
        return import_lists(source, ["locations"], self._convert, "a Records.json file")

    def _convert(self, _prefix: str, record: dict[str, Any]) -> tuple[Row, ...]:
        position = e7_position(record, "latitudeE7", "longitudeE7")
        when = takeout_time(record, "timestamp")
        if position is None:
            self.skipped += 1
            return ()
        extra = {out: record[key] for key, out in _EXTRA_FIELDS if record.get(key) is not None}
        if "activity" in record and (guesses := activity_guesses(record["activity"])):
            extra["activity"] = guesses
        accuracy = optional_number(record.get("accuracy"), "accuracy")
        return (point_row(when, position, SOURCE, accuracy, extra),)
