"""Safe JSON streaming: byte order marks, the nesting guard across chunks, error positions."""

from __future__ import annotations

import json
import random

import ijson
import pytest

from vault.errors import ImportRefused
from vault.importers.base import Source
from vault.importers.jsonstream import MAX_DEPTH, object_records, open_json, refuse_invalid_json


def _parse(data: bytes) -> list[object]:
    with open_json(Source.from_bytes("t.json", data)) as stream:
        return list(ijson.items(stream, "item"))


def _nested(depth: int) -> object:
    value: object = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def _awkward_string(rng: random.Random) -> str:
    """Strings full of what the guard must not count: escapes, quotes, brackets."""
    pieces = ["\\", '"', "[", "]", "{", "}", "\\\\", '\\"', "x", "é", "\n"]
    return "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 400)))


def test_strings_never_count_as_nesting_whatever_the_chunk_boundaries() -> None:
    rng = random.Random(7)
    # ~1 MB of strings so escapes and quotes straddle many 64 KiB chunk boundaries
    records = [{"s": _awkward_string(rng)} for _ in range(5000)]
    records[-1]["n"] = _nested(MAX_DEPTH - 3)  # the guard's depth must be exact at the end
    data = json.dumps(records).encode()
    assert len(data) > 16 * 64 * 1024

    assert len(_parse(data)) == len(records)


def test_nesting_past_the_limit_is_refused() -> None:
    data = json.dumps([_nested(MAX_DEPTH)]).encode()

    with pytest.raises(ImportRefused, match=f"nested more than {MAX_DEPTH} levels"):
        _parse(data)


def test_a_byte_order_mark_is_skipped() -> None:
    assert _parse(b'\xef\xbb\xbf[{"a": 1}]') == [{"a": 1}]


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"[1, 2,, 3]", "near byte 7 (line 1)"),
        (b'[\n  {"a": 1},\n  {"a": tru }\n]', "near byte 26 (line 3)"),
        (b'\xef\xbb\xbf[{"a": 1}] x', "near byte 15 (line 1): parse error: trailing garbage"),
        (b"[" + b'{"a": 1},\n' * 20_000 + b"{", f"near byte {1 + 20_000 * 10 + 1}"),
    ],
)
def test_invalid_json_is_located(data: bytes, where: str) -> None:
    refused = refuse_invalid_json(Source.from_bytes("bad.json", data))

    assert refused.file == "bad.json"
    assert where in refused.problem


@pytest.mark.parametrize(
    ("data", "records"),
    [
        (b'[{"a": 1}, {"a": {"b": [1, 2]}}]', [{"a": 1}, {"a": {"b": [1, 2]}}]),
        (b'{"meta": {"x": [{"no": 1}]}, "tags": ["t"], "rows": [{"a": 1}], "n": 1}', [{"a": 1}]),
        (b'{"grid": [[{"no": 1}]], "rows": [{"a": 1}]}', [{"a": 1}]),
        (b'{"rows": []}', []),
        (b"[]", []),
    ],
)
def test_object_records_accepts_lists_and_wrapped_lists(data: bytes, records: list[object]) -> None:
    found = list(object_records(Source.from_bytes("r.json", data)))

    assert found == list(enumerate(records, 1))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'"text"', "expected a list of objects, got a string"),
        (b"[{}, [1]]", "record 2 is a list"),
        (b'{"a": [1, 2]}', "found an object without one"),
        (b'{"a": [{"x": 1}], "b": [{"y": 2}]}', "found lists 'a' and 'b'"),
    ],
)
def test_object_records_refuses_other_shapes(data: bytes, problem: str) -> None:
    with pytest.raises(ImportRefused, match=problem):
        list(object_records(Source.from_bytes("r.json", data)))
