"""Hostile XML prologs, refused alike by every importer that reads XML: Apple Health's
export.xml, its workout route files and GPX files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures import apple_health as health_fx
from tests.fixtures import gpx as gpx_fx
from vault.errors import ImportRefused
from vault.importers.apple_health import AppleHealthImporter
from vault.importers.base import Source
from vault.importers.gpx import GpxImporter
from vault.importers.xmlsafe import PROLOG_LIMIT, open_xml

LAUGHS = '<!ENTITY lol0 "lol">' + "".join(
    f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
)
# (DOCTYPE or other prolog markup, with {root} for the root's name; a reference to put in the
# root's attribute; what the refusal says)
HOSTILE = {
    "billion laughs": ("<!DOCTYPE {root} [" + LAUGHS + "]>", "&lol9;", "entity declarations"),
    "xxe": ('<!DOCTYPE {root} [<!ENTITY x SYSTEM "file://{secret}">]>', "&x;", "<!ENTITY"),
    "external DTD": ('<!DOCTYPE {root} SYSTEM "file://{secret}">', "", "external DTDs"),
    "public DTD": ('<!DOCTYPE {root} PUBLIC "-//X//DTD X//EN" "http://x/x.dtd">', "", "external"),
    "parameter entity": (
        '<!DOCTYPE {root} [<!ENTITY % pe SYSTEM "http://x/e.dtd"> %pe;]>',
        "",
        "<!ENTITY",
    ),
    # scanners that stop at the first "<root" or "]>" are fooled by these
    "root in a comment": (
        '<!-- <{root}> --><!DOCTYPE {root} [<!ENTITY a "b">]>',
        "&a;",
        "<!ENTITY",
    ),
    "]> in an attribute default": (
        '<!DOCTYPE {root} [<!ATTLIST x y CDATA "]>"><!ENTITY a "b">]>',
        "&a;",
        "<!ENTITY",
    ),
    "]> in single quotes": (
        '<!DOCTYPE {root} [<!ATTLIST x y CDATA \'"]>\'><!ENTITY a "b">]>',
        "&a;",
        "<!ENTITY",
    ),
    "]> in a subset comment": ('<!DOCTYPE {root} [<!-- ]> --><!ENTITY a "b">]>', "&a;", "<!ENTITY"),
    "]> in a subset PI": ('<!DOCTYPE {root} [<?pi ]> ?><!ENTITY a "b">]>', "&a;", "<!ENTITY"),
    "past the first chunk": (
        "<!-- " + "x" * 70_000 + ' --><!DOCTYPE {root} [<!ENTITY a "b">]>',
        "&a;",
        "<!ENTITY",
    ),
}
PLAIN = '<?xml version="1.0"?>'
GPX_BODY = '<wpt lat="1" lon="2"><time>2024-01-01T00:00:00Z</time></wpt>'


def _gpx(prolog: str, ref: str, declaration: str) -> str:
    return (
        f"{declaration}\n{prolog.format(root='gpx')}\n"
        f'<gpx version="1.1" creator="x{ref}" xmlns="{gpx_fx.GPX11}">{GPX_BODY}</gpx>\n'
    )


def _apple_export(folder: Path, prolog: str, ref: str, declaration: str) -> Path:
    path = folder / "export.xml"
    path.write_text(
        f"{declaration}\n{prolog.format(root='HealthData')}\n"
        f'<HealthData locale="en{ref}"></HealthData>\n'
    )
    return path


def _gpx_file(folder: Path, prolog: str, ref: str, declaration: str) -> Path:
    path = folder / "track.gpx"
    path.write_text(_gpx(prolog, ref, declaration))
    return path


def _apple_route(folder: Path, prolog: str, ref: str, declaration: str) -> Path:
    """A sound export.xml whose workout's route file is the hostile one; returns the route."""
    route = folder / health_fx.ROUTE_PATH.lstrip("/")
    route.parent.mkdir()
    route.write_text(_gpx(prolog, ref, declaration))
    health_fx.write_export_xml(folder / "export.xml")
    return route


def _read_apple(folder: Path) -> None:
    list(AppleHealthImporter().rows(Source.from_path(folder / "export.xml")))


def _read_gpx(folder: Path) -> None:
    list(GpxImporter().rows(Source.from_path(folder / "track.gpx")))


# (writes the hostile file into a folder, reads the folder the way an import would)
FACES: dict[str, tuple[Callable[[Path, str, str, str], Path], Callable[[Path], None]]] = {
    "apple export.xml": (_apple_export, _read_apple),
    "apple route": (_apple_route, _read_apple),
    "gpx": (_gpx_file, _read_gpx),
}


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_prologs_are_refused_before_parsing(tmp_path: Path, face: str, case: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    prolog, ref, problem = HOSTILE[case]
    write, read = FACES[face]
    path = write(tmp_path, prolog.replace("{secret}", str(secret)), ref, PLAIN)

    started = time.perf_counter()
    with pytest.raises(ImportRefused) as refused:
        read(tmp_path)

    assert refused.value.file.endswith(path.name)
    assert problem in refused.value.problem
    assert "TOP-SECRET" not in str(refused.value)
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("face", FACES)
def test_entities_hidden_by_a_utf7_declaration_are_refused(tmp_path: Path, face: str) -> None:
    # the byte scan cannot see "+ADw-!ENTITY"; Apple reads UTF-8 whatever is declared, GPX
    # honours the declaration and checks the parsed DTD
    prolog = '<!DOCTYPE {root} [+ADw-!ENTITY a "secret"+AD4-]>'
    write, read = FACES[face]
    path = write(tmp_path, prolog, "+ACY-a+ADs-", '<?xml version="1.0" encoding="UTF-7"?>')

    with pytest.raises(ImportRefused) as refused:
        read(tmp_path)

    assert refused.value.file == str(path)
    assert "secret" not in refused.value.problem
    if face == "gpx":
        assert "<!ENTITY" in refused.value.problem


def test_entity_text_in_comments_and_pis_is_not_a_declaration(tmp_path: Path) -> None:
    prolog = (
        '<!-- <!ENTITY a "b"> --><?pi <!ENTITY c "d"> ?>'
        '<!DOCTYPE gpx [<!-- <!ENTITY e "f"> --><?pi <!ENTITY g "h"> ?>'
        '<!ATTLIST gpx note CDATA "]> [ \'">]>'
    )
    path = tmp_path / "track.gpx"
    path.write_text(_gpx(prolog, "", PLAIN))

    (row,) = list(GpxImporter().rows(Source.from_path(path)))

    assert (row.lat, row.lon, row.extra["kind"]) == (1.0, 2.0, "waypoint")


@pytest.mark.parametrize(
    ("document", "root"),
    [
        (health_fx.export_xml_text().encode(), b"HealthData"),
        (b'\xef\xbb\xbf<?xml version="1.0"?>\n<g:gpx xmlns:g="x">', b"g:gpx"),
        (b"<!-- " + b"-" * 100_000 + b' -->\n<gpx version="1.1"/>', b"gpx"),
    ],
)
def test_open_xml_names_the_root_and_replays_every_byte(document: bytes, root: bytes) -> None:
    with open_xml(Source.from_bytes("doc.xml", document)) as (stream, found):
        assert found == root
        assert stream.read(10) + stream.read() == document


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"<!-- " + b"x" * PROLOG_LIMIT + b" --><gpx>", "no root element near the start"),
        ("<gpx>".encode("utf-16"), "not an XML document"),
        (b"<!ELEMENT gpx ANY><gpx>", "unexpected markup before the root element"),
    ],
)
def test_open_xml_refuses_what_it_cannot_scan(document: bytes, problem: str) -> None:
    with pytest.raises(ImportRefused, match=problem), open_xml(Source.from_bytes("d", document)):
        pass
