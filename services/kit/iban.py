"""Saudi IBANs: ISO 13616 validation (``schwifty``) and the bank they belong to."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from services.kit.errors import Rejected

_BANKS_FILE = Path(__file__).with_name("reference") / "saudi_banks.json"


@lru_cache(maxsize=1)
def _banks() -> dict[str, dict[str, str]]:
    return {k: v for k, v in json.loads(_BANKS_FILE.read_text(encoding="utf-8")).items()
            if not k.startswith("_")}


def check_saudi_iban(value: str, field: str = "iban") -> str:
    """Return the IBAN in compact form, or raise Rejected('invalid_iban')."""
    try:
        iban = IBAN(value)
    except SchwiftyException as error:
        raise Rejected("invalid_iban", f"{field} {value!r} is not a valid IBAN: {error}") from None
    if iban.country_code != "SA":
        raise Rejected("invalid_iban", f"{field} must be a Saudi (SA) IBAN, got {iban.country_code}")
    return iban.compact


def bank_code(iban: str) -> str:
    """The two-digit bank identifier of a Saudi IBAN."""
    return iban[4:6]


def bank_name(iban: str, language: str = "en") -> str | None:
    entry = _banks().get(bank_code(iban))
    return entry.get(language) if entry else None


def mask(value: str | None, keep: int = 4) -> str | None:
    """Mask an IBAN or an ID for display: only the last ``keep`` characters show."""
    if value is None:
        return None
    if len(value) <= keep:
        return "*" * len(value)
    return "*" * (len(value) - keep) + value[-keep:]
