"""Preferences from CSV/TSV and JSON files: one ``preferences.<name>`` dataset per file.

The dataset name is the user's ``--dataset`` ("foo" or "preferences.foo"), else the file stem,
in snake_case. Each record keeps all its cells in ``extra``; a few columns get roles, chosen by
name (case and punctuation ignored):

- time: ``timestamp``, ``datetime``, ``date_time``, ``created_at``, ``time``, ``date`` (or a
  ``date`` plus a ``time`` column), else a name ending in ``_at``, ``_on``, ``_date``, ``_time``
  or ``_timestamp``; ISO 8601 or epoch seconds/milliseconds. A column with such a name whose
  first value is not a time (a "time" of durations) is treated as plain data instead.
- value: ``value``, ``rating`` or ``score``, else the first numeric column (not an id or an
  unnamed index column).
- text: ``item``, ``name``, ``title`` or ``label``; unit: ``unit``.

Records without a time are stamped with the moment the import started. The record's identity
(its key) is the canonical JSON of its cells and nothing else, so a re-import adds nothing:
the vault keeps the first copy, with its first import time, and a copied or touched file
(new modification time) is still the same data. The price: two identical lines in one file
are one record. Refusals name the line (CSV, JSON Lines) or the record number (JSON).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import Any

from vault.importers.archive import file_name
from vault.importers.base import Importer, Row, Source, register
from vault.importers.jsonstream import json_type, object_records, open_json
from vault.timeparse import EpochOffset, parse_iso8601

TIME_COLUMNS = ("timestamp", "datetime", "date_time", "created_at", "time", "date")
VALUE_COLUMNS = ("value", "rating", "score")
TEXT_COLUMNS = ("item", "name", "title", "label")
_INT = re.compile(r"^-?(0|[1-9]\d*)$")
_FLOAT = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")
_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")
_LOOKS_LIKE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_TIME_SUFFIX = re.compile(r"_(at|on|date|time|timestamp)$")
_UNNAMED = re.compile(r"^column_\d+$")
_CLOCK = re.compile(r"^\d{1,2}:\d{2}")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_FHIR_HEAD = re.compile(rb'"resourceType"\s*:')


def snake_case(text: str) -> str:
    """'Movie Ratings (2024)' -> 'movie_ratings_2024'; 'myRatings' -> 'my_ratings'."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def dataset_name(source: Source, given: str | None) -> str:
    """``preferences.<name>`` from the user's choice or the file stem; refuse what won't do."""
    if given:
        prefix, dot, rest = given.partition(".")
        if dot and prefix != "preferences":
            raise source.refuse(f"dataset {given!r}: CSV/JSON imports go to preferences.<name>")
        name = rest if dot else given
    else:
        name = PurePosixPath(file_name(source)).stem
    snake = snake_case(name)
    if not snake:
        raise source.refuse(f"cannot make a dataset name from {name!r}; give one with --dataset")
    return f"preferences.{snake}"


def cell_value(text: str, decimal_comma: bool = False) -> Any:
    """A CSV cell as JSON would hold it: int, float, None for empty, else the string.

    With ``decimal_comma`` (semicolon files, as European spreadsheets write them) '4,5' is 4.5.
    """
    stripped = text.strip()
    if not stripped:
        return None
    if _INT.match(stripped):
        return int(stripped)
    if _FLOAT.match(stripped):
        return float(stripped)
    if decimal_comma and _DECIMAL_COMMA.match(stripped):
        return float(stripped.replace(",", "."))
    return text


def _number(value: Any) -> float | None:
    if isinstance(value, str):
        value = cell_value(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _as_text(value: Any) -> str | None:
    if value is None or value == "" or isinstance(value, bool | dict | list):
        return None
    return str(value)


def parse_time(value: Any) -> EpochOffset | None:
    """ISO 8601 text or epoch seconds/milliseconds -> (epoch, offset); None if it is neither."""
    number = _number(value)
    if number is not None:
        # Plausible epochs only (after 1973): a bare 20240101 is not a time.
        if 1e8 <= number < 1e11:
            return number, None
        if 1e11 <= number < 1e14:
            return number / 1000.0, None
        return None
    if not isinstance(value, str) or not _LOOKS_LIKE_DATE.match(value.strip()):
        return None
    try:
        return parse_iso8601(value)
    except ValueError:
        return None


class RecordMapper:
    """Turns records (column -> value) into Rows; column roles are fixed by the first records."""

    def __init__(self, source: Source, dataset: str, now: float, columns: list[str]) -> None:
        self.source = source
        self.dataset = dataset
        self.source_label = file_name(source)
        self.now = now
        self._columns: list[str] = []
        self._by_role: dict[str, str] = {}
        self._roles: dict[str, str | None] = {}
        self._time_candidates: list[str] | None = None
        self._time_like: set[str] = set()
        self._time: str | None = None
        self._value_decided = False
        if columns:
            self._learn_columns(columns)

    def _learn_columns(self, columns: Iterable[str]) -> None:
        self._columns = list(columns)
        by_role = {snake_case(c): c for c in reversed(self._columns)}  # first spelling wins
        for role, names in (("text", TEXT_COLUMNS), ("value", VALUE_COLUMNS), ("unit", ("unit",))):
            self._roles[role] = next((by_role[n] for n in names if n in by_role), None)
        candidates = [by_role[n] for n in TIME_COLUMNS if n in by_role]
        candidates += [c for c in self._columns if _TIME_SUFFIX.search(snake_case(c))]
        if "date" in by_role and "time" in by_role:
            candidates.insert(0, "date+time")
        self._time_candidates = list(dict.fromkeys(candidates))
        self._time_like = set(self._time_candidates)
        self._by_role = by_role

    def _time_cell(self, column: str, record: dict[str, Any]) -> Any:
        if column != "date+time":
            return record.get(column)
        day, clock = record.get(self._by_role["date"]), record.get(self._by_role["time"])
        if isinstance(day, str) and isinstance(clock, str) and _CLOCK.match(clock.strip()):
            return f"{day.strip()}T{clock.strip()}"
        return day if clock is None or clock == "" else None

    def _find_time(self, record: dict[str, Any]) -> EpochOffset | None:
        """Pick the time column from the first record that fills one; drop names that lie."""
        assert self._time_candidates is not None
        for column in list(self._time_candidates):
            cell = self._time_cell(column, record)
            if cell is None or cell == "":
                continue
            parsed = parse_time(cell)
            if parsed is None:
                self._time_candidates.remove(column)  # e.g. a "time" column of durations
                continue
            self._time = column
            self._time_candidates = []
            return parsed
        return None

    def _decide_value(self, record: dict[str, Any]) -> None:
        self._value_decided = True
        if self._roles["value"] is not None:
            return
        taken = {self._roles["text"], self._roles["unit"]} | self._time_like
        for column in self._columns:
            name = snake_case(column)
            # ids and unnamed index columns count rows; they measure nothing
            if column in taken or name == "id" or name.endswith("_id") or _UNNAMED.match(column):
                continue
            cell = record.get(column)
            if not isinstance(cell, bool) and isinstance(cell, int | float):
                self._roles["value"] = column
                return

    def row(self, record: dict[str, Any], where: str) -> Row:
        """The Row for one record; ``where`` ('line 7', 'record 3') names it in refusals."""
        if not self._roles:
            self._learn_columns(record)
        if not self._value_decided:
            self._decide_value(record)
        moment: EpochOffset | None = None
        if self._time is not None:
            cell = self._time_cell(self._time, record)
            if cell is not None and cell != "":
                moment = parse_time(cell)
                if moment is None:
                    raise self.source.refuse(f"{where}: {self._time} {cell!r} is not a time")
        elif self._time_candidates:
            moment = self._find_time(record)
        text_col, value_col, unit_col = (self._roles[r] for r in ("text", "value", "unit"))
        unit = record.get(unit_col) if unit_col else None
        return Row(
            dataset=self.dataset,
            start=moment[0] if moment else self.now,
            offset=moment[1] if moment else None,
            value=_number(record.get(value_col)) if value_col else None,
            text=_as_text(record.get(text_col)) if text_col else None,
            unit=unit if isinstance(unit, str) and unit else None,
            source=self.source_label,
            extra=record,
            key=json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")),
        )


class _PreferencesImporter(Importer):
    """Shared by the CSV and JSON formats: naming, the import clock, the record mapping."""

    def __init__(self, dataset: str | None = None, now: float | None = None) -> None:
        super().__init__(dataset)
        self._now = now  # tests pin the clock; imports use the time they start

    def _mapper(self, source: Source, columns: list[str]) -> RecordMapper:
        now = self._now if self._now is not None else time.time()
        return RecordMapper(source, dataset_name(source, self.dataset), now, columns)


def _plain_file(source: Source) -> bool:
    """Sniff plain files only: Takeout and Health archives hold many JSON and CSV files that
    are not preferences (Settings.json, Profile.json), and one refused member would refuse the
    whole archive. ``--format preferences_csv`` still reads archive members."""
    return source.member is None


def _decoded_lines(source: Source, stream: io.BufferedReader) -> Iterator[str]:
    """Lines as text, refusing the first one that is not UTF-8 (a BOM is dropped)."""
    for number, raw in enumerate(stream, 1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise source.refuse(
                f"line {number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column"
                f" {exc.start + 1}); save the file as UTF-8"
            ) from None


def _head_text(head: bytes) -> str | None:
    """The head as text, tolerating a character cut at its end; None for binary data."""
    if b"\x00" in head:
        return None
    try:
        return head.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.start >= len(head) - 3:
            return head[: exc.start].removeprefix(codecs.BOM_UTF8).decode("utf-8", "replace")
        return None


def _delimiter(source: Source) -> str:
    """Tab for .tsv; else what csv.Sniffer sees in complete lines of the head, or a comma."""
    if file_name(source).lower().endswith(".tsv"):
        return "\t"
    text = _head_text(source.head(64 * 1024)) or ""
    sample = text[: text.rfind("\n") + 1] or text
    try:
        found = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","
    header = sample.split("\n", 1)[0]
    # The header names the columns, so it must hold the delimiter when there are several.
    return found if found in header or "," not in header else ","


def _check_header(source: Source, cells: list[str]) -> list[str]:
    columns = []
    for number, cell in enumerate(cells, 1):
        name = cell.strip()
        if cell_value(name) is not None and not isinstance(cell_value(name), str):
            raise source.refuse(f"line 1: no header row ({name!r} looks like data, not a name)")
        if _LOOKS_LIKE_DATE.match(name):
            raise source.refuse(f"line 1: no header row ({name!r} looks like data, not a name)")
        name = name or f"column_{number}"  # spreadsheets leave an index column unnamed
        if name in columns:
            raise source.refuse(f"line 1: column {name!r} appears twice in the header")
        columns.append(name)
    return columns


@register
class PreferencesCsvImporter(_PreferencesImporter):
    """Preferences from CSV or TSV with a header row."""

    name = "preferences_csv"
    label = "Preferences (CSV/TSV)"

    @classmethod
    def sniff(cls, source: Source, head: bytes) -> bool:
        """True for a .csv/.tsv file that is not binary.

        Text in another encoding is claimed too, so that rows() can say which line is not
        UTF-8 instead of the planner calling the file unrecognised.
        """
        named = _plain_file(source) and file_name(source).lower().endswith((".csv", ".tsv"))
        return named and (head.startswith(_UTF16_BOMS) or b"\x00" not in head)

    def rows(self, source: Source) -> Iterator[Row]:
        """One row per CSV record."""
        if source.head(2).startswith(_UTF16_BOMS):
            raise source.refuse("the file is UTF-16 text; save it as CSV UTF-8")
        delimiter = _delimiter(source)
        comma = delimiter == ";"
        with io.BufferedReader(source.open(), 64 * 1024) as stream:  # type: ignore[arg-type]
            reader = csv.reader(
                _decoded_lines(source, stream),
                delimiter=delimiter,
                skipinitialspace=True,
                strict=True,
            )
            line = 0
            try:
                header = next(reader, None)
                if not header:
                    raise source.refuse("line 1: no header row (the file starts empty)")
                columns = _check_header(source, header)
                mapper = self._mapper(source, columns)
                line = reader.line_num
                for cells in reader:
                    first_line, line = line + 1, reader.line_num
                    if not cells:
                        continue  # blank line
                    if len(cells) > len(columns):
                        raise source.refuse(
                            f"line {first_line}: {len(cells)} fields, header has {len(columns)}"
                        )
                    values = [cell_value(c, comma) for c in cells] + [None] * len(columns)
                    record = dict(zip(columns, values, strict=False))
                    yield mapper.row(record, f"line {first_line}")
            except csv.Error as exc:
                hint = " (a quoted field is never closed)" if "end of data" in str(exc) else ""
                raise source.refuse(f"line {line + 1}: {exc}{hint}") from None


def _jsonl_records(source: Source) -> Iterator[tuple[int, dict[str, Any]]]:
    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    with open_json(source) as stream:  # guarded: deep nesting would exhaust the stack
        for number, text in enumerate(_decoded_lines(source, stream), 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text, parse_constant=no_constants)
            except json.JSONDecodeError as exc:
                problem = f"{exc.msg} at column {exc.colno}"
                raise source.refuse(f"line {number}: invalid JSON ({problem})") from None
            except ValueError as exc:
                raise source.refuse(f"line {number}: invalid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise source.refuse(
                    f"expected one JSON object per line, line {number} is {json_type(record)}"
                )
            yield number, record


@register
class PreferencesJsonImporter(_PreferencesImporter):
    """Preferences from a JSON list of objects, an object wrapping one, or JSON Lines."""

    name = "preferences_json"
    label = "Preferences (JSON / JSON Lines)"

    @classmethod
    def sniff(cls, source: Source, head: bytes) -> bool:
        """True for a .json/.jsonl/.ndjson file that starts like a JSON object or list.

        FHIR resources are not preferences: a lone Patient must not become a dataset.
        """
        named = file_name(source).lower().endswith((".json", ".jsonl", ".ndjson"))
        named = named and _plain_file(source)
        starts = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1] in (b"[", b"{")
        return named and starts and _FHIR_HEAD.search(head) is None

    def rows(self, source: Source) -> Iterator[Row]:
        """One row per JSON object."""
        lines = file_name(source).lower().endswith((".jsonl", ".ndjson"))
        mapper = self._mapper(source, [])
        if lines:
            for number, record in _jsonl_records(source):
                yield mapper.row(record, f"line {number}")
            return
        for number, record in object_records(source):
            yield mapper.row(record, f"record {number}")
