"""Plain-words formatting shared by screens: times, spans, dataset names, actors, counts."""

from __future__ import annotations

from datetime import UTC, datetime

ACTION_WORDS = {
    "import": "Imported",
    "export": "Exported",
    "delete": "Deleted",
    "read": "Read by a task",
    "grant": "Consent given",
    "consent": "Consent given",
    "revoke": "Consent revoked",
}
KIND_WORDS = {"health": "Health", "location": "Location", "preferences": "Preferences"}


def parse_iso(text: str | None) -> datetime | None:
    """'2024-01-01T07:00:00Z' -> an aware datetime (None stays None)."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def local_time(text: str | None, with_time: bool = True) -> str:
    """An ISO UTC time shown in this computer's time zone, e.g. '2024-01-01 08:00'."""
    moment = parse_iso(text)
    if moment is None:
        return "–"
    local = moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


def record_time(epoch: float | None, offset_minutes: int | None) -> str:
    """A record's time as the person saw it then: UTC plus the offset it was recorded with."""
    if epoch is None:
        return "–"
    moment = datetime.fromtimestamp(epoch + (offset_minutes or 0) * 60, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def span(first: str | None, last: str | None) -> str:
    """'2024-01-01 – 2024-03-31' from two ISO times."""
    if not first:
        return "–"
    return f"{local_time(first, False)} – {local_time(last, False)}"


LOCATION_TITLES = {
    "location.points": "Location points",
    "location.visits": "Place visits",
    "location.trips": "Trips",
}


def dataset_title(name: str) -> str:
    """'health.step_count' -> 'Step count'; the kind is shown separately."""
    if name in LOCATION_TITLES:
        return LOCATION_TITLES[name]
    _, _, rest = name.partition(".")
    words = (rest or name).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def kind_word(kind: str) -> str:
    """'health' -> 'Health'."""
    return KIND_WORDS.get(kind, kind.title())


def action_word(action: str) -> str:
    """An access-log action in plain words."""
    return ACTION_WORDS.get(action, action.replace("_", " ").capitalize())


def actor_word(actor: str | None, own_did: str | None, names: dict[str, str] | None = None) -> str:
    """'You' for this vault's own identity, an organization's name, else a shortened DID."""
    if not actor:
        return "–"
    if own_did and actor == own_did:
        return "You"
    if names and actor in names:
        return names[actor]
    return short_did(actor)


def organization_names(vault: object) -> dict[str, str]:
    """Organization DID -> name, from the requests in the vault's inbox."""
    from vault import consent as vc

    return {r["issuer"]: r["organization"] for r in vc.list_requests(vault)}


def short_did(did: str) -> str:
    """'did:key:z6MkhaXg…Q2doK' — enough to recognise, short enough to read."""
    if len(did) <= 24:
        return did
    return f"{did[:14]}…{did[-5:]}"


def count(n: int | None, noun: str) -> str:
    """'1 record', '12,345 records'."""
    n = n or 0
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
