"""GPX 1.0 and 1.1: track points, route points and waypoints -> ``location.points``.

Streams with lxml ``iterparse`` (no entity resolution, no network, finished points cleared), so
memory stays flat on long tracks. Each point's row has ``extra["kind"]`` = "track", "route" or
"waypoint", its name and its track or route name, ``altitude`` from ``<ele>``, GPS quality
fields, Garmin TrackPointExtension v1/v2 values (heart rate, cadence, temperature...) and
Apple Health's route extensions (``hAcc`` becomes the row's accuracy in metres).

Times: a point without its own ``<time>`` takes the document's time (``metadata/time`` in 1.1,
``gpx/time`` in 1.0), flagged ``extra["time_from"] = "metadata"`` -- planned routes and saved
waypoints usually have none. Without a document time such points are skipped and counted in
``skipped``; a file whose every point is skipped that way is refused, since nothing in it says
when it was. Points that borrow the document time get their place in the file appended to their
natural key, so a route's points stay apart from each other and from waypoints.

Refused: a root without the GPX 1.0/1.1 namespace, ``<!ENTITY`` declarations and external DTDs
(the prolog scanned by ``xmlsafe`` before parsing; the parsed DTD checked again, since a GPX's
declared encoding is honoured), malformed or truncated XML (naming the line), points with
missing or impossible coordinates or unreadable times.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, ClassVar

from lxml import etree

from vault.importers.base import Importer, Row, Source, register
from vault.importers.location import RecordProblem, decimal_position, iso_time, point_row
from vault.importers.xmlsafe import (
    PARSER_OPTIONS,
    malformed,
    open_xml,
    refuse_parsed_entities,
)
from vault.timeparse import EpochOffset

GPX_VERSIONS = {
    "http://www.topografix.com/GPX/1/0": "1.0",
    "http://www.topografix.com/GPX/1/1": "1.1",
}
_TPX_PREFIX = "{http://www.garmin.com/xmlschemas/TrackPointExtension/v"
# Garmin TrackPointExtension children (v1 and v2) -> extra keys
_TPX_FIELDS = {
    "hr": "heart_rate",
    "cad": "cadence",
    "atemp": "air_temperature",
    "wtemp": "water_temperature",
    "depth": "depth",
    "speed": "speed",
    "course": "course",
    "bearing": "bearing",
}
# Numeric GPX children of a point -> extra keys (speed and course exist in GPX 1.0 only)
_GPX_FIELDS = {
    "ele": "altitude",
    "speed": "speed",
    "course": "course",
    "hdop": "hdop",
    "vdop": "vdop",
    "pdop": "pdop",
    "sat": "satellites",
}
# Apple Health's route extensions, in the GPX namespace; hAcc becomes the row's accuracy
_APPLE_FIELDS = {
    "speed": "speed",
    "course": "course",
    "hAcc": "accuracy",
    "vAcc": "vertical_accuracy",
}
_KINDS = {"trkpt": "track", "rtept": "route", "wpt": "waypoint"}
# a <gpx> root after the optional BOM, XML declaration, comments and doctype
_GPX_HEAD = re.compile(
    rb"^(?:\xef\xbb\xbf)?(?:\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>)*"
    rb"<(?:[A-Za-z_][\w.-]*:)?gpx[\s>/]",
    re.DOTALL,
)


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _time(element: etree._Element) -> EpochOffset:
    return iso_time((element.text or "").strip(), "<time>")


def _number(text: str | None, what: str) -> float | int:
    """A GPX number; integral ones (heart rate, cadence, satellites) stay ints."""
    text = (text or "").strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RecordProblem(f"{what} is not a number: {text!r}")
    return value


# Elements whose end the parse reports (in the document's namespace); all others pass in C.
_WATCHED = (*_KINDS, "trkseg", "trk", "rte", "metadata", "name", "time")


class _Document:
    """What the parse has seen so far that later points depend on."""

    def __init__(self, ns: str, creator: str | None) -> None:
        self.ns = ns
        self.tags = {f"{{{ns}}}{local}": local for local in _WATCHED}
        self.source = creator or "GPX"
        self.time: EpochOffset | None = None
        self.names: dict[str, str | None] = {"trk": None, "rte": None}
        self.segment = 0  # segments finished in the current track
        self.borrowed = 0  # points that took the document time so far

    def point(self, element: etree._Element, tag: str) -> Row | None:
        """One trkpt/rtept/wpt as a row, or None when it has no time to go by."""
        position = decimal_position(element.get("lat"), element.get("lon"))
        extra: dict[str, Any] = {"kind": _KINDS[tag]}
        when = None
        for child in element.iterchildren():
            name = _local(child.tag)
            if name == "time":
                when = _time(child)
            elif name in _GPX_FIELDS:
                extra[_GPX_FIELDS[name]] = _number(child.text, name)
            elif name in ("name", "fix", "sym", "type") and child.text:
                extra[name] = child.text.strip()
            elif len(child):  # <extensions> in 1.1; 1.0 puts extensions right in the point
                self._extensions(child, extra)
        if tag == "trkpt":
            extra.update(track=self.names["trk"], segment=self.segment)
        elif tag == "rtept":
            extra["route"] = self.names["rte"]
        accuracy = extra.pop("accuracy", None)
        if when is not None:
            return point_row(when, position, self.source, accuracy, extra)
        if self.time is None:
            return None
        extra["time_from"] = "metadata"
        row = point_row(self.time, position, self.source, accuracy, extra)
        # Borrowed times are shared: tell a route's points apart from each other and from
        # waypoints by their place in the file (stable when the same file comes again).
        self.borrowed += 1
        row.key = f"{row.key}/{extra['kind']}{self.borrowed}"
        return row

    def _extensions(self, container: etree._Element, extra: dict[str, Any]) -> None:
        """Garmin TrackPointExtension values, and Apple's speed/course/hAcc/vAcc."""
        for child in container.iter():
            tag = child.tag
            if not isinstance(tag, str):
                continue
            name = _local(tag)
            if tag.startswith(_TPX_PREFIX) and name in _TPX_FIELDS:
                extra[_TPX_FIELDS[name]] = _number(child.text, name)
            elif name in _APPLE_FIELDS and tag == f"{{{self.ns}}}{name}":
                extra[_APPLE_FIELDS[name]] = _number(child.text, name)

    def finish(self, element: etree._Element, tag: str) -> Row | None:
        """Note what a finished element tells; return the row when it is a point."""
        row = None
        if tag in _KINDS:
            try:
                row = self.point(element, tag)
            except RecordProblem as exc:
                raise RecordProblem(f"<{tag}> {exc}") from None
        else:
            parent = element.getparent()
            parent_tag = self.tags.get(parent.tag) if parent is not None else None
            if tag == "name":
                if parent_tag in self.names:
                    self.names[parent_tag] = (element.text or "").strip() or None
                return None
            if tag == "time":
                if parent_tag == "metadata" or (parent is not None and parent.getparent() is None):
                    self.time = _time(element)
                return None
            if tag == "trkseg":
                self.segment += 1
            elif tag in self.names:
                self.names[tag], self.segment = None, 0
        # finished points and containers: drop them so a long track keeps memory flat
        element.clear(keep_tail=True)
        container = element.getparent()
        if container is not None:
            while element.getprevious() is not None:
                del container[0]
        return row


def _open_document(source: Source) -> _Document:
    """Check the prolog, the root element and the parsed DTD before any point is read."""
    with open_xml(source) as (stream, _root):
        try:
            for _, root in etree.iterparse(stream, events=("start",), **PARSER_OPTIONS):
                return _check_root(source, root)
        except etree.XMLSyntaxError as exc:
            raise malformed(source, exc) from None
    raise source.refuse("no XML root element")


def _check_root(source: Source, root: etree._Element) -> _Document:
    qname = etree.QName(root)
    if qname.localname != "gpx":
        raise source.refuse(f"not a GPX document (root element <{qname.localname}>)")
    if qname.namespace not in GPX_VERSIONS:
        found = f" (found {qname.namespace!r})" if qname.namespace else ""
        raise source.refuse(f"GPX without the GPX 1.0/1.1 namespace{found}")
    refuse_parsed_entities(source, root)
    return _Document(qname.namespace, root.get("creator"))


@register
class GpxImporter(Importer):
    """GPX 1.0/1.1 files -> ``location.points``."""

    name: ClassVar[str] = "gpx"
    label: ClassVar[str] = "GPX 1.0/1.1 (tracks, routes, waypoints)"

    @classmethod
    def sniff(cls, source: Source, head: bytes) -> bool:
        """An XML document whose root element is <gpx> (namespace checked when importing)."""
        return _GPX_HEAD.match(head) is not None

    def __init__(self, dataset: str | None = None) -> None:
        super().__init__(dataset)
        self.skipped = 0  # points without a time, in a file without a document time

    def rows(self, source: Source) -> Iterator[Row]:
        """Yield one row per point with a time, in document order."""
        doc = _open_document(source)
        yielded = 0
        with source.open() as stream:
            context = etree.iterparse(stream, events=("end",), tag=list(doc.tags), **PARSER_OPTIONS)
            element = None
            try:
                for _, element in context:
                    row = doc.finish(element, doc.tags[element.tag])
                    if row is not None:
                        yielded += 1
                        yield row
                    elif doc.tags[element.tag] in _KINDS:
                        self.skipped += 1
            except etree.XMLSyntaxError as exc:
                raise malformed(source, exc) from None
            except RecordProblem as exc:
                line = element.sourceline if element is not None else "?"
                raise source.refuse(f"line {line}: {exc}") from None
        if self.skipped and not yielded:
            raise source.refuse(
                f"none of its {self.skipped} points has a time, and the file has no"
                " metadata time to go by"
            )
