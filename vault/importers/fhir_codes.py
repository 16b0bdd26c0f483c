"""FHIR R4 codes and values as Tessera stores them: which dataset a LOINC code feeds, Apple
Health's spelling of UCUM units, FHIR dates, and reading CodeableConcepts, References and
value[x] fields.

A FHIR Observation and an Apple Health record of the same measurement land in the same
dataset, with the same unit and scale, so that one dataset holds one kind of number.
"""

from __future__ import annotations

import re
from typing import Any

from vault.timeparse import EpochOffset, parse_iso8601

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"

#: LOINC code -> the dataset Apple Health uses for the same measurement.
LOINC_DATASETS: dict[str, str] = {
    "29463-7": "health.body_mass",
    "8867-4": "health.heart_rate",
    "8302-2": "health.height",
    "39156-5": "health.body_mass_index",
    "2708-6": "health.oxygen_saturation",
    "59408-5": "health.oxygen_saturation",
    "8310-5": "health.body_temperature",
    "9279-1": "health.respiratory_rate",
    "2339-0": "health.blood_glucose",
    "2345-7": "health.blood_glucose",
    "55423-8": "health.step_count",
    "8480-6": "health.blood_pressure_systolic",
    "8462-4": "health.blood_pressure_diastolic",
}
#: Blood pressure panels, split into one row per component (55284-4 is the older code).
BP_PANELS = frozenset({"85354-9", "55284-4"})
OTHER_OBSERVATIONS = "health.observations"
#: Datasets where Apple Health stores a percentage as a fraction (0.97, unit "%").
PERCENT_AS_FRACTION = frozenset({"health.oxygen_saturation"})

#: UCUM (or common free-text) units -> the unit strings Apple Health writes.
UNITS: dict[str, str] = dict.fromkeys(
    ("/min", "{beats}/min", "{breaths}/min", "beats/minute", "breaths/minute", "bpm"), "count/min"
)
UNITS |= {"mm[Hg]": "mmHg", "Cel": "degC", "[degF]": "degF", "[lb_av]": "lb", "[in_i]": "in"}
UNITS |= {"kg/m2": "count", "{steps}": "count", "/d": "count"}  # Apple: BMI and steps are counts

_PARTIAL_DATE = re.compile(r"^\d{4}(-\d{2})?$")


def normalise_unit(unit: str | None) -> str | None:
    """A UCUM unit as Apple Health writes it ('mm[Hg]' -> 'mmHg'); unknown units pass through."""
    if not unit:
        return None
    return UNITS.get(unit, unit)


def fhir_time(text: Any) -> EpochOffset:
    """Parse a FHIR date/dateTime/instant; partial dates ('2019', '2019-05') mean their start."""
    if not isinstance(text, str):
        raise ValueError(f"not a date: {text!r}")
    if _PARTIAL_DATE.match(text):
        text += "-01" * (3 - text.count("-") - 1)
    return parse_iso8601(text)


def codings_of(concept: Any) -> list[dict[str, Any]]:
    """The Codings of a CodeableConcept (none when it is not one)."""
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def code_of(concept: Any, system: str) -> str | None:
    """The first code of ``system`` in a CodeableConcept."""
    for coding in codings_of(concept):
        if coding.get("system") == system and coding.get("code"):
            return str(coding["code"])
    return None


def loinc_of(concept: Any) -> str | None:
    """The LOINC code that decides the dataset: a mapped one when several are listed."""
    codes = [
        str(c["code"]) for c in codings_of(concept) if c.get("system") == LOINC and c.get("code")
    ]
    mapped = [c for c in codes if c in LOINC_DATASETS or c in BP_PANELS]
    return (mapped or codes or [None])[0]


def display_of(concept: Any, system: str | None = None) -> str | None:
    """Human text of a CodeableConcept: its text, else a display (of ``system`` first)."""
    if not isinstance(concept, dict):
        return None
    if concept.get("text"):
        return str(concept["text"])
    codings = codings_of(concept)
    preferred = [c for c in codings if c.get("system") == system] + codings
    for coding in preferred:
        if coding.get("display"):
            return str(coding["display"])
    return None


def status_of(concept: Any) -> str | None:
    """clinicalStatus / verificationStatus: a CodeableConcept in R4, a bare code in STU3."""
    if isinstance(concept, str):
        return concept
    codings = codings_of(concept)
    return str(codings[0]["code"]) if codings and codings[0].get("code") else None


def reference_of(ref: Any) -> str | None:
    """The ``reference`` of a Reference ('Encounter/123'), or None."""
    return str(ref["reference"]) if isinstance(ref, dict) and ref.get("reference") else None


def measurement_of(element: dict[str, Any]) -> tuple[float | None, str | None, str | None]:
    """(number, unit, text) of an Observation's or component's value[x]."""
    quantity = element.get("valueQuantity")
    number = quantity.get("value") if isinstance(quantity, dict) else None
    if isinstance(number, int | float) and not isinstance(number, bool):
        raw_unit = quantity.get("code") if quantity.get("system") == UCUM else None
        unit = normalise_unit(raw_unit or quantity.get("unit") or quantity.get("code"))
        return float(number), unit, None
    if type(element.get("valueInteger")) is int:
        return float(element["valueInteger"]), None, None
    if "valueCodeableConcept" in element:
        return None, None, display_of(element["valueCodeableConcept"], SNOMED)
    if isinstance(element.get("valueString"), str):
        return None, None, element["valueString"]
    if isinstance(element.get("valueBoolean"), bool):
        return None, None, "true" if element["valueBoolean"] else "false"
    return None, None, None
