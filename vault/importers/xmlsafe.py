"""Safe opening of XML input for the importers: a prolog scan before any parser sees a byte.

Hostile XML does its harm in the prolog: ``<!ENTITY`` declarations expand to gigabytes
(billion laughs) or pull in local files and URLs (XXE), and an external DTD can declare them
from elsewhere. :func:`open_xml` reads up to the root element and scans the XML declaration,
comments, processing instructions and the DOCTYPE by hand, skipping quoted literals, comments
and PIs inside the internal subset, so that neither a ``<HealthData`` nor a ``]>`` hidden in a
comment or an attribute default ends the scan early. An internal DTD without entities (Apple
Health writes one) is accepted; any ``<!ENTITY`` or external DTD is refused.

The scan reads bytes, so it sees what the parser sees when the parser decodes an ASCII-based
encoding. Parse with :data:`UTF8_PARSER_OPTIONS` (UTF-8 whatever the declaration says), or,
where other declared encodings must be honoured (GPX in Latin-1), check the parsed DTD as well
with :func:`refuse_parsed_entities`: in UTF-7, ``+ADw-!ENTITY`` is an entity declaration too.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from collections.abc import Iterator
from typing import IO, Any

from lxml import etree

from vault.errors import ImportRefused
from vault.importers.base import Source

PROLOG_LIMIT = 1 << 20  # real DTDs are ~15 KB; a longer prolog is not an export we read
ENTITY_REFUSAL = (
    "XML entity declarations are not allowed (<!ENTITY: billion laughs / external entities)"
)
#: lxml options for every parse: no entity resolution, DTD loading or network access.
PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}
#: The same, reading the bytes as UTF-8 whatever the declaration says, so that an encoding
#: spelling "<!ENTITY" differently (UTF-7, UTF-16) cannot slip past the byte scan.
UTF8_PARSER_OPTIONS: dict[str, Any] = {**PARSER_OPTIONS, "encoding": "utf-8"}
_CHUNK = 1 << 16
_ROOT_NAME = re.compile(rb"[^\s/>]+")
_DOCTYPE_STOP = re.compile(rb"[\"'\[>]")
_SUBSET_STOP = re.compile(rb"[\"'<\]]")
_LOCATION_SUFFIX = re.compile(r",? line \d+, column \d+$")


@contextlib.contextmanager
def open_xml(source: Source) -> Iterator[tuple[IO[bytes], bytes]]:
    """Open ``source`` once its prolog is checked: (a stream from its first byte, root name).

    The root name keeps its prefix, if any (``b"gpx"``, ``b"g:gpx"``).
    """
    with source.open() as raw:
        head, root = read_prolog(raw, source)
        yield _Replay(head, raw), root


def read_prolog(stream: IO[bytes], source: Source) -> tuple[bytes, bytes]:
    """Read ``stream`` up to its root element; return (bytes read, root element name).

    Refuses entity declarations and external DTDs before any XML parser sees the file.
    """
    buf = b""
    while len(buf) < PROLOG_LIMIT:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        buf += chunk
        root = _scan_prolog(buf, source)
        if root is not None:
            return buf, root
    raise source.refuse("not an XML document (no root element near the start)")


def _scan_prolog(buf: bytes, source: Source) -> bytes | None:
    """The root element's name, or None when ``buf`` ends before it."""
    i = len(codecs.BOM_UTF8) if buf.startswith(codecs.BOM_UTF8) else 0
    while True:
        while i < len(buf) and buf[i] in b" \t\r\n":
            i += 1
        if len(buf) - i < 10:
            return None  # too short to tell "<!DOCTYPE" from "<!--"
        if buf[i] != 0x3C:
            raise source.refuse(
                "not an XML document (expected XML in UTF-8 or another ASCII-based encoding)"
            )
        if buf.startswith(b"<?", i):
            end, step = buf.find(b"?>", i + 2), 2
        elif buf.startswith(b"<!--", i):
            end, step = buf.find(b"-->", i + 4), 3
        elif buf.startswith(b"<!DOCTYPE", i):
            end, step = _doctype_end(buf, i + 9, source), 1
        elif buf.startswith(b"<!", i):
            raise source.refuse("malformed XML: unexpected markup before the root element")
        else:
            match = _ROOT_NAME.match(buf, i + 1)
            return match.group() if match and match.end() < len(buf) else None
        if end < 0:
            return None
        i = end + step


def _doctype_end(buf: bytes, j: int, source: Source) -> int:
    """Index of the '>' closing the DOCTYPE that starts before ``j``; -1 when not in ``buf``."""
    in_subset = False
    while True:
        match = (_SUBSET_STOP if in_subset else _DOCTYPE_STOP).search(buf, j)
        if match is None:
            return -1
        j = match.start()
        char = buf[j : j + 1]
        if char in b"\"'":
            if not in_subset:  # a SYSTEM/PUBLIC literal: entities could come from anywhere
                raise source.refuse("external DTDs are not allowed")
            j = buf.find(char, j + 1)
            if j < 0:
                return -1
            j += 1
        elif char == b"[":
            in_subset, j = True, j + 1
        elif char == b"]":
            in_subset, j = False, j + 1
        elif char == b">":
            return j
        elif len(buf) - j < 8:
            return -1
        elif buf.startswith(b"<!ENTITY", j):
            raise source.refuse(ENTITY_REFUSAL)
        elif buf.startswith((b"<!--", b"<?"), j):
            close = b"-->" if buf[j + 1] == 0x21 else b"?>"
            j = buf.find(close, j + 2)
            if j < 0:
                return -1
            j += len(close)
        else:
            j += 1  # a markup declaration (<!ELEMENT, <!ATTLIST): its quotes are skipped above


class _Replay:
    """A binary stream that replays bytes already read, then reads on."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data = self._head if size < 0 else self._head[:size]
            self._head = self._head[len(data) :]
            return data
        return self._rest.read(size)


def refuse_parsed_entities(source: Source, root: etree._Element) -> None:
    """Refuse a document whose parsed internal DTD declares entities (seen at its root)."""
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise source.refuse(ENTITY_REFUSAL)


def malformed(source: Source, exc: etree.XMLSyntaxError) -> ImportRefused:
    """The refusal for lxml's syntax error: its line, and its message without the position."""
    problem = _LOCATION_SUFFIX.sub("", exc.msg or str(exc))
    return source.refuse(f"malformed XML at line {exc.lineno}: {problem}")
