"""Time parsing shared by importers: every time becomes (UTC epoch seconds, offset minutes)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

EpochOffset = tuple[float, int | None]


@lru_cache(maxsize=64)
def _offset_minutes(text: str) -> int:
    """'+0100' or '-05:30' -> minutes east of UTC."""
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return sign * (int(digits[:2]) * 60 + int(digits[2:4] or 0))


@lru_cache(maxsize=4096)
def _local_midnight_epoch(date_text: str) -> int:
    """Epoch seconds of 'YYYY-MM-DD' 00:00 UTC (cached: exports repeat days many times)."""
    return int(datetime.fromisoformat(date_text).replace(tzinfo=UTC).timestamp())


def parse_apple(text: str) -> EpochOffset:
    """Parse Apple Health's '2024-01-01 08:00:00 +0100' quickly.

    Raises ValueError on anything else. Called millions of times per export, so it slices
    instead of using strptime.
    """
    if len(text) != 25 or text[10] != " " or text[19] != " ":
        raise ValueError(f"not an Apple Health date: {text!r}")
    offset = _offset_minutes(text[20:])
    seconds = int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
    return float(_local_midnight_epoch(text[:10]) + seconds - offset * 60), offset


def parse_iso8601(text: str) -> EpochOffset:
    """Parse ISO 8601 with 'Z', '+hh:mm', fractional seconds or no zone (taken as UTC).

    The offset is None when the text carried no zone. Raises ValueError on bad input.
    """
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python < 3.11 quirks aside, fromisoformat rejects >6 fractional digits: trim them.
    dot = text.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        if end - dot - 1 > 6:
            text = text[: dot + 7] + text[end:]
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC).timestamp(), None
    delta = moment.utcoffset()
    offset = int(delta.total_seconds() // 60) if delta is not None else None
    return moment.timestamp(), offset


def parse_epoch_ms(text: str | int) -> EpochOffset:
    """Milliseconds since the epoch (Google's legacy ``timestampMs``), as a string or int."""
    return int(text) / 1000.0, None


def iso_utc(epoch: float | None) -> str | None:
    """Epoch seconds -> '2024-01-01T07:00:00Z' (None stays None)."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    if moment.microsecond:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
