"""Saudi person IDs: a 10-digit national ID (starts with 1) or iqama (starts
with 2) whose last digit is a Luhn check digit (python-stdnum's ``luhn``)."""

from __future__ import annotations

import re

from stdnum import luhn

from services.kit.errors import Rejected

PERSON_ID = re.compile(r"^[12][0-9]{9}$")
#: The fields of inbound data that name a person.
PERSON_FIELDS = frozenset({"beneficiary_id", "payer_id", "sponsor_id", "person_id"})


def is_person_id(value: str) -> bool:
    return bool(PERSON_ID.match(value)) and luhn.is_valid(value)


def check_person_id(value: str, field: str) -> str:
    """``value`` if it is a valid national ID / iqama, else a rejection naming ``field``."""
    if not is_person_id(value):
        kind = "national ID" if value.startswith("1") else "iqama"
        raise Rejected("invalid_person_id",
                       f"{field}: {value[:2]}******{value[-2:]} is not a valid {kind} (check digit)")
    return value


def with_check_digit(first_nine: str) -> str:
    """The valid ID that starts with these nine digits (test data, simulators)."""
    return first_nine + luhn.calc_check_digit(first_nine)
