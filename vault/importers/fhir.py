"""FHIR R4 ``Bundle`` JSON (Synthea-style): Observations, Conditions and medications.

Entries are streamed with ijson, one at a time, so a bundle of tens of megabytes never sits
in memory. Mapping:

- Observation -> the Apple Health dataset of the same meaning, chosen by LOINC code
  (``8867-4`` -> ``health.heart_rate`` ...), when it carries a number; a blood pressure panel
  becomes one row per component (systolic, diastolic). Units become Apple's ('mm[Hg]' ->
  'mmHg'), and so does the scale of oxygen saturation (97 % -> 0.97 with unit '%'), so a
  dataset fed by both sources holds one kind of number (see ``fhir_codes``). Anything else,
  and mapped codes without a number, go to ``health.observations`` with the code's display
  as text.
- Condition -> ``health.conditions``; MedicationRequest / MedicationStatement ->
  ``health.medications``.
- Every other resource (Patient, Encounter, Claim, ...) is skipped unread: names, addresses
  and the patient reference are never stored. A Medication only lends its name and RxNorm
  code to the requests that reference it.

Entries marked ``entered-in-error`` are skipped; resources without any usable time are skipped
too, because a row must sit on the timeline. A time that is present but unparseable refuses
the whole import, naming the entry. A row's key is the resource's id (plus the component
code), so importing the same bundle twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ijson

from vault.errors import ImportRefused
from vault.importers.archive import file_name
from vault.importers.base import Importer, Row, Source, register
from vault.importers.fhir_codes import (
    BP_PANELS,
    LOINC,
    LOINC_DATASETS,
    OTHER_OBSERVATIONS,
    PERCENT_AS_FRACTION,
    RXNORM,
    SNOMED,
    code_of,
    codings_of,
    display_of,
    fhir_time,
    loinc_of,
    measurement_of,
    reference_of,
    status_of,
)
from vault.importers.jsonstream import EVENT_TYPES, json_type, parsing_json
from vault.timeparse import EpochOffset

_BUNDLE_HEAD = re.compile(rb'"resourceType"\s*:\s*"Bundle"')
# A bundle that names its type last (some servers) still shows entries holding resources.
_ENTRY_HEAD = re.compile(rb'"resource"\s*:\s*\{\s*"resourceType"\s*:')


@dataclass(slots=True)
class _Entry:
    """Where we are in the bundle: for error messages (``file``, ``index``) and for rows."""

    file: str
    index: int
    rtype: str
    ident: str  # the row key: 'Observation/<id>', or the fullUrl
    source: str  # the row's source label

    def where(self) -> str:
        return f"Bundle.entry[{self.index}] ({self.ident})"


def _time(entry: _Entry, resource: dict[str, Any], field: str) -> EpochOffset | None:
    """Parse ``resource[field]`` (a dotted path such as 'effectivePeriod.start'), or None."""
    value: Any = resource
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return None
    try:
        return fhir_time(value)
    except (ValueError, TypeError):
        raise ImportRefused(
            entry.file, f"{entry.where()}: {field} {value!r} is not a FHIR date"
        ) from None


def _first_time(entry: _Entry, resource: dict[str, Any], *fields: str) -> EpochOffset | None:
    for field in fields:
        found = _time(entry, resource, field)
        if found is not None:
            return found
    return None


def _observation_rows(entry: _Entry, res: dict[str, Any]) -> Iterator[Row]:
    if res.get("status") == "entered-in-error":
        return
    start = _first_time(
        entry, res, "effectiveDateTime", "effectiveInstant", "effectivePeriod.start", "issued"
    )
    if start is None:
        return
    end = _time(entry, res, "effectivePeriod.end") if "effectivePeriod" in res else None
    loinc = loinc_of(res.get("code"))
    common = {
        "status": res.get("status"),
        "category": [c.get("code") for cat in res.get("category") or [] for c in codings_of(cat)],
        "encounter": reference_of(res.get("encounter")),
    }
    components = [c for c in res.get("component") or [] if isinstance(c, dict)]
    if loinc in BP_PANELS and components:
        for number, component in enumerate(components):
            part = loinc_of(component.get("code"))
            suffix = part or f"component{number}"
            parts = {**common, "panel": loinc}
            yield _observation_row(entry, component, part, start, end, parts, suffix)
        return
    row = _observation_row(entry, res, loinc, start, end, common, None)
    if components and row.dataset == OTHER_OBSERVATIONS:
        assert row.extra is not None
        row.extra["components"] = [_component_summary(c) for c in components]
    yield row


def _observation_row(
    entry: _Entry,
    element: dict[str, Any],
    loinc: str | None,
    start: EpochOffset,
    end: EpochOffset | None,
    common: dict[str, Any],
    suffix: str | None,
) -> Row:
    value, unit, value_text = measurement_of(element)
    extra = {"loinc": loinc, **common}
    if loinc is None:
        first = next(iter(codings_of(element.get("code"))), None)
        if first is not None:
            extra["code"] = f"{first.get('system', '')}|{first.get('code', '')}"
    dataset = LOINC_DATASETS.get(loinc or "") if value is not None else None
    if dataset is not None:
        text = value_text
        if dataset in PERCENT_AS_FRACTION and unit == "%" and value is not None:
            value /= 100.0  # Apple writes SpO2 as 0.97 with unit "%"; one scale per dataset
    else:
        # health.observations mixes many codes: the text must say what was observed.
        dataset, text = OTHER_OBSERVATIONS, display_of(element.get("code"), LOINC)
        if value_text is not None:
            extra["value_text"] = value_text
    key = f"{entry.ident}#{suffix}" if suffix else entry.ident
    return _row(entry, dataset, start, end, text, extra, key, value=value, unit=unit)


def _row(
    entry: _Entry,
    dataset: str,
    start: EpochOffset,
    end: EpochOffset | None,
    text: str | None,
    extra: dict[str, Any],
    key: str | None = None,
    **more: Any,
) -> Row:
    """A Row at ``start`` (UTC, offset kept); empty extras are left out."""
    return Row(
        dataset=dataset,
        start=start[0],
        end=end[0] if end else None,
        offset=start[1],
        text=text,
        source=entry.source,
        extra={k: v for k, v in extra.items() if v is not None and v != []},
        key=key or entry.ident,
        **more,
    )


def _component_summary(component: dict[str, Any]) -> dict[str, Any]:
    code = component.get("code")
    summary = zip(("value", "unit", "text"), measurement_of(component), strict=True)
    found = {"loinc": loinc_of(code), "display": display_of(code, LOINC), **dict(summary)}
    return {k: v for k, v in found.items() if v is not None}


def _condition_row(entry: _Entry, res: dict[str, Any]) -> Row | None:
    verification = status_of(res.get("verificationStatus"))
    if verification == "entered-in-error":
        return None
    start = _first_time(entry, res, "onsetDateTime", "onsetPeriod.start", "recordedDate")
    if start is None:
        return None
    end = _first_time(entry, res, "abatementDateTime", "abatementPeriod.start")
    extra = {
        "snomed": code_of(res.get("code"), SNOMED),
        "clinical_status": status_of(res.get("clinicalStatus")),
        "verification_status": verification,
        "encounter": reference_of(res.get("encounter")),
    }
    return _row(entry, "health.conditions", start, end, display_of(res.get("code"), SNOMED), extra)


def _dosage_text(dosages: Any) -> str | None:
    texts = [str(d["text"]) for d in dosages or [] if isinstance(d, dict) and d.get("text")]
    return "; ".join(texts) or None


def _medication_row(
    entry: _Entry, res: dict[str, Any], medications: dict[str, tuple[str | None, str | None]]
) -> Row | None:
    if res.get("status") == "entered-in-error":
        return None
    if entry.rtype == "MedicationRequest":
        start = _time(entry, res, "authoredOn")
        end = None
        dosage = _dosage_text(res.get("dosageInstruction"))
    else:
        start = _first_time(entry, res, "effectiveDateTime", "effectivePeriod.start")
        start = start or _time(entry, res, "dateAsserted")
        end = _time(entry, res, "effectivePeriod.end") if "effectivePeriod" in res else None
        dosage = _dosage_text(res.get("dosage"))
    if start is None:
        return None
    concept = res.get("medicationCodeableConcept")
    text, rxnorm = display_of(concept, RXNORM), code_of(concept, RXNORM)
    reference = res.get("medicationReference")
    if concept is None and isinstance(reference, dict):
        # Synthea writes the Medication resource just before the request that references it;
        # a contained one is addressed as '#id'.
        for contained in res.get("contained") or []:
            if isinstance(contained, dict) and contained.get("resourceType") == "Medication":
                medications.setdefault(f"#{contained.get('id')}", _medication_names(contained))
        text, rxnorm = medications.get(str(reference.get("reference")), (None, None))
        text = reference.get("display") or text
    extra = {
        "rxnorm": rxnorm,
        "status": res.get("status"),
        "intent": res.get("intent"),
        "dosage": dosage,
        "encounter": reference_of(res.get("encounter") or res.get("context")),
    }
    return _row(entry, "health.medications", start, end, text, extra)


def _medication_names(res: dict[str, Any]) -> tuple[str | None, str | None]:
    return display_of(res.get("code"), RXNORM), code_of(res.get("code"), RXNORM)


def _check_bundle(source: Source) -> None:
    """Refuse unless the top level is an object whose resourceType is 'Bundle'.

    Bundles put resourceType first, so this usually reads a few bytes; a file that puts it
    after its entries costs one extra pass.
    """
    try:
        with parsing_json(source) as f:
            for prefix, event, value in ijson.parse(f, use_float=True):
                if prefix == "" and event not in ("start_map", "map_key", "end_map"):
                    raise source.refuse(
                        f"not a FHIR Bundle (the top level is {EVENT_TYPES[event]})"
                    )
                if prefix == "resourceType" and event != "map_key":
                    if value == "Bundle":
                        return
                    shown = repr(value) if event == "string" else EVENT_TYPES[event]
                    raise source.refuse(f"not a FHIR Bundle (resourceType is {shown})")
    finally:
        source.consumed = 0  # the real pass reports progress from the start
    raise source.refuse("not a FHIR Bundle (resourceType is missing)")


@register
class FhirImporter(Importer):
    """FHIR R4 Bundle JSON, as Synthea and patient portals export it."""

    name = "fhir"
    label = "FHIR R4 Bundle (JSON)"

    @classmethod
    def sniff(cls, source: Source, head: bytes) -> bool:
        """True when the head declares a Bundle, or shows bundle entries holding resources."""
        return _BUNDLE_HEAD.search(head) is not None or _ENTRY_HEAD.search(head) is not None

    def rows(self, source: Source) -> Iterator[Row]:
        """Yield rows for the Observations, Conditions and medications of the bundle."""
        _check_bundle(source)
        file_label = f"FHIR bundle {file_name(source)}"
        medications: dict[str, tuple[str | None, str | None]] = {}
        with parsing_json(source) as f:
            entries = ijson.items(f, "entry.item", use_float=True)
            for index, item in enumerate(entries):
                yield from self._entry_rows(source, index, item, file_label, medications)

    def _entry_rows(
        self,
        source: Source,
        index: int,
        item: Any,
        file_label: str,
        medications: dict[str, tuple[str | None, str | None]],
    ) -> Iterator[Row]:
        if not isinstance(item, dict):
            raise source.refuse(f"Bundle.entry[{index}] is {json_type(item)}, not an object")
        resource = item.get("resource")
        if resource is None:
            return  # transaction responses and deletions carry no resource
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise source.refuse(f"Bundle.entry[{index}].resource has no resourceType")
        rtype = resource["resourceType"]
        if rtype not in ("Observation", "Condition", "MedicationRequest", "MedicationStatement"):
            if rtype == "Medication":
                names = _medication_names(resource)
                for ref in (
                    item.get("fullUrl"),
                    resource.get("id") and f"Medication/{resource['id']}",
                ):
                    if ref:
                        medications[str(ref)] = names
            return
        if resource.get("id"):
            ident = f"{rtype}/{resource['id']}"
        elif item.get("fullUrl"):
            ident = str(item["fullUrl"])
        else:
            canonical = json.dumps(resource, sort_keys=True, separators=(",", ":"))
            ident = f"{rtype}/sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"
        meta = resource.get("meta")
        row_source = meta.get("source") if isinstance(meta, dict) else None
        entry = _Entry(source.name, index, rtype, ident, str(row_source or file_label))
        if rtype == "Observation":
            yield from _observation_rows(entry, resource)
            return
        if rtype == "Condition":
            row = _condition_row(entry, resource)
        else:
            row = _medication_row(entry, resource, medications)
        if row is not None:
            yield row
