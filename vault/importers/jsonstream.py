"""Safe streaming of JSON input for the importers: BOM, nesting bombs, error positions.

ijson (yajl) is fast but has three gaps that hostile or merely odd files find:

- it rejects a UTF-8 byte order mark, which Windows tools like to write;
- its prefixes make memory grow with the square of nesting depth: 20,000 brackets (a 40 KB
  file) take 1 GB. :func:`open_json` refuses nesting past :data:`MAX_DEPTH` (or a caller's
  tighter limit) before the parser sees it, tracking brackets outside strings at C speed
  (translate, regex, accumulate);
- its errors say what but not where. :func:`refuse_invalid_json` re-reads the file to find
  the byte and line, only on the error path; :func:`parsing_json` opens a file and applies it
  to whatever the parser raises inside its block.

:func:`object_records` streams the objects of the common "list of records" shapes.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import itertools
import operator
import re
from collections.abc import Iterator
from typing import Any

import ijson

from vault.errors import ImportRefused
from vault.importers.base import Source

#: Deepest nesting accepted; real exports stay below 20 (FHIR extensions nest the most).
MAX_DEPTH = 256
#: ijson event -> how a message names that kind of JSON value
EVENT_TYPES = {"start_map": "an object", "start_array": "a list", "string": "a string"}
EVENT_TYPES |= {"number": "a number", "boolean": "a boolean", "null": "null"}
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def json_type(value: Any) -> str:
    """'a string', 'a list', 'an object', ... for a parsed JSON value."""
    kinds = {str: "string", list: "start_array", dict: "start_map", bool: "boolean"}
    return EVENT_TYPES["null" if value is None else kinds.get(type(value), "number")]


def open_json(source: Source, max_depth: int = MAX_DEPTH) -> io.BufferedReader:
    """Open ``source`` for ijson: past a byte order mark, refusing nesting past ``max_depth``."""
    guard = _DepthGuard(source, *_open_without_bom(source), max_depth)
    return io.BufferedReader(guard, 64 * 1024)


@contextlib.contextmanager
def parsing_json(source: Source, max_depth: int = MAX_DEPTH) -> Iterator[io.BufferedReader]:
    """:func:`open_json`, where invalid JSON met inside the block is refused with its place."""
    try:
        with open_json(source, max_depth) as stream:
            yield stream
    except ijson.JSONError:
        raise refuse_invalid_json(source) from None


def _open_without_bom(source: Source) -> tuple[io.BufferedReader, int]:
    stream = io.BufferedReader(source.open(), 64 * 1024)  # type: ignore[arg-type]
    if stream.peek(3)[:3] == codecs.BOM_UTF8:
        stream.read(3)
        return stream, 3
    return stream, 0


class _DepthGuard(io.RawIOBase):
    """Passes JSON bytes through, tracking bracket depth outside strings at C speed."""

    def __init__(
        self, source: Source, raw: io.BufferedReader, skipped: int, max_depth: int
    ) -> None:
        self._source = source
        self._raw = raw
        self._max_depth = max_depth
        self._depth = 0
        self._in_string = False
        self._backslash = b""  # an escape cut in two by the chunk boundary
        self.position = skipped

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self._track(data)
        self.position += len(data)
        return len(data)

    def _track(self, data: bytes) -> None:
        # Drop escapes (\" and \\), then strings, leaving the brackets that nest.
        plain = _ESCAPE.sub(b"", self._backslash + data)
        self._backslash = b"\\" if plain.endswith(b"\\") else b""
        structure = plain.translate(None, _NOT_STRUCTURE)
        structure = _STRING.sub(b"", b'"' + structure if self._in_string else structure)
        quote = structure.find(b'"')
        self._in_string = quote != -1
        brackets = structure[:quote] if self._in_string else structure
        if not brackets:
            return
        # Depth after each bracket, all in C: opens count 2, closes 0, minus the bracket number.
        steps = itertools.accumulate(brackets.translate(_DEPTH_STEPS))
        depths = map(operator.sub, steps, itertools.count(1))
        if self._depth + max(depths) > self._max_depth:
            raise self._source.refuse(
                f"JSON nested more than {self._max_depth} levels deep near byte {self.position}"
            )
        self._depth += 2 * (brackets.count(b"[") + brackets.count(b"{")) - len(brackets)

    def close(self) -> None:
        self._raw.close()
        super().close()


def refuse_invalid_json(source: Source, buf_size: int = 64 * 1024) -> ImportRefused:
    """Re-read ``source`` to find where its JSON breaks; an ImportRefused saying so.

    yajl does not report positions, so this parses again at full speed to find the failing
    chunk, then feeds that chunk one byte at a time: the byte that makes it fail is the spot.
    Only runs on the error path.
    """
    fast = _failure_point(source, None, buf_size)
    if fast is None:
        return source.refuse("invalid JSON")
    exact = _failure_point(source, max(0, fast[0] - buf_size), buf_size) or fast
    position, line, detail = exact
    if detail.endswith("premature EOF"):
        detail += " (the file ends too early; truncated?)"
    return source.refuse(f"invalid JSON near byte {position} (line {line}): {detail}")


def _failure_point(
    source: Source, slow_from: int | None, buf_size: int
) -> tuple[int, int, str] | None:
    """(bytes read, line, yajl's message) when parsing fails, or None if it does not."""
    stream, skipped = _open_without_bom(source)
    reader = _PositionReader(stream, skipped, slow_from)
    try:
        with stream:
            for _ in ijson.items(reader, "\x00", buf_size=buf_size):
                pass
    except ijson.JSONError as exc:
        detail = exc.args[0] if exc.args else "parse error"
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return reader.position, reader.line, str(detail).strip().splitlines()[0].rstrip(".")
    return None


class _PositionReader:
    """Counts bytes and lines handed to the parser; from ``slow_from`` on, one byte per read."""

    def __init__(self, raw: Any, position: int, slow_from: int | None) -> None:
        self._raw = raw
        self._slow_from = slow_from
        self.position = position
        self.line = 1

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        if self._slow_from is not None:
            left = self._slow_from - self.position
            size = 1 if left <= 0 else min(size, left) if size > 0 else left
        data = self._raw.read(size)
        self.position += len(data)
        self.line += data.count(b"\n")
        return data


Event = tuple[str, str, Any]
_OPENS = ("start_map", "start_array")
_CLOSES = ("end_map", "end_array")


def _skip_value(events: Iterator[Event], depth: int = 1) -> None:
    """Consume the rest of a value whose opening events (``depth`` of them) were read."""
    for _, event, _ in events:
        depth += (event in _OPENS) - (event in _CLOSES)
        if depth == 0:
            return


def _build(first: Event, events: Iterator[Event]) -> Any:
    """The object whose start_map is ``first``, built from the events that follow."""
    builder = ijson.ObjectBuilder()
    builder.event(first[1], first[2])
    depth = 1
    for _, event, value in events:
        builder.event(event, value)
        depth += (event in _OPENS) - (event in _CLOSES)
        if depth == 0:
            return builder.value
    return builder.value  # unreachable on valid JSON: the parser raises first


def _list_records(source: Source, first: Event, events: Iterator[Event]) -> Iterator[Any]:
    """(number, object) for a list whose start_array and first item event were read."""
    item = first
    for number in itertools.count(1):
        if item[1] == "end_array":
            return
        if item[1] != "start_map":
            kind = "a list" if item[1] == "start_array" else json_type(item[2])
            raise source.refuse(f"expected a list of objects, record {number} is {kind}")
        yield number, _build(item, events)
        item = next(events)


def object_records(source: Source) -> Iterator[tuple[int, dict[str, Any]]]:
    """(number, object) for ``[{...}, ...]``, or an object holding one such list.

    Next to the list, the object may hold metadata: scalars, objects, lists of other things.
    Streams one record at a time; refuses any other shape, naming the record (from 1), and
    invalid JSON, naming the byte and line.
    """
    with parsing_json(source) as f:
        events = iter(ijson.parse(f, use_float=True))
        _, event, value = next(events)
        if event == "start_array":
            yield from _list_records(source, next(events), events)
        elif event != "start_map":
            raise source.refuse(f"expected a list of objects, got {json_type(value)}")
        else:
            found: str | None = None
            key, empty = "", False
            for prefix, event, value in events:
                if event == "map_key" and prefix == "":
                    key = value
                elif event == "start_map":
                    _skip_value(events)  # metadata next to the list
                elif event == "start_array":
                    first = next(events)
                    if first[1] == "end_array":
                        empty = True  # an export with no records yet
                        continue
                    if first[1] != "start_map":  # a list of something else: metadata
                        _skip_value(events, 2 if first[1] in _OPENS else 1)
                    elif found is not None:
                        raise source.refuse(
                            f"expected one list of objects, found lists {found!r} and {key!r}"
                        )
                    else:
                        found = key
                        yield from _list_records(source, first, events)
            if found is None and not empty:
                raise source.refuse("expected a list of objects, found an object without one")
        for _ in events:
            pass  # let the parser check the rest (trailing garbage)
