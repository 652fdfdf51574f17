"""The responsibility matrix and the liaison registry, both data files.

``reference/responsibility.json`` says which agency owns each state of each
journey; ``reference/liaisons.json`` (or the file ``LIAISONS_FILE`` names)
gives each agency's contact point. Escalations, the console's "liaison to
call" and the time-by-agency view all read them here. Pure after load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from services.kit.iban import bank_code

ANY = "*"
#: In the payment rows of the matrix: the agency named on the payment itself.
OWN_AGENCY = "AGENCY"


class LiaisonError(ValueError):
    """The registry or the matrix is not valid."""


@dataclass(frozen=True)
class Liaison:
    agency: str
    name: str
    name_ar: str
    role: str
    phone: str
    email: str
    language: str = "ar"
    webhook: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Row:
    state: str
    route: str
    owner: str


class Responsibility:
    """Who owns the next step of a case."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        try:
            self.version = str(raw["version"])
            self._refund = tuple(_Row(r["state"], r.get("route", ANY), r["owner"]) for r in raw["refund"])
            self._payment = {r["state"]: r["owner"] for r in raw["payment"]}
            self._before = dict(raw["holder_before_order"])
            self._after = dict(raw["holder_after_order"])
        except (KeyError, TypeError) as error:
            raise LiaisonError(f"responsibility matrix: missing or wrong {error}") from None

    def refund_owner(self, state: str, route: str) -> str | None:
        """The agency owning an open refund's next step; None once the case is closed."""
        for row in self._refund:
            if row.state == state and row.route in (ANY, route):
                return row.owner
        return None

    def payment_owner(self, state: str, agency: str) -> str | None:
        owner = self._payment.get(state)
        return agency if owner == OWN_AGENCY else owner

    def holder_before_order(self, route: str, default: str) -> str:
        return self._before.get(route, default)

    def holder_after_order(self, route: str) -> str:
        return self._after.get(route, self._after.get(ANY, "BANK"))


class Registry:
    """Each agency's liaison; banks by their IBAN bank code, falling back to ``BANK``."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        try:
            self.version = str(raw["version"])
            self._agencies = {code: Liaison(agency=code, **spec) for code, spec in raw["agencies"].items()}
            self._banks = {code: Liaison(agency="BANK", **spec) for code, spec in raw.get("banks", {}).items()}
        except (KeyError, TypeError) as error:
            raise LiaisonError(f"liaison registry: missing or wrong {error}") from None
        if "MOF" not in self._agencies:
            raise LiaisonError("liaison registry: MOF must have a liaison (the fallback for every escalation)")

    def for_agency(self, agency: str, iban: str | None = None) -> Liaison:
        """The liaison for ``agency``; a bank's own liaison when the IBAN names one; MoF when none is listed."""
        if agency == "BANK" and iban:
            bank = self._banks.get(bank_code(iban) or "")
            if bank is not None:
                return bank
        return self._agencies.get(agency) or self._agencies["MOF"]

    def agencies(self) -> tuple[Liaison, ...]:
        return tuple(self._agencies.values()) + tuple(self._banks.values())


def _read(filename: str, override: str = "") -> dict[str, Any]:
    if override:
        return json.loads(Path(override).read_text(encoding="utf-8"))
    return json.loads(resources.files("services.kit.reference").joinpath(filename).read_text(encoding="utf-8"))


@cache
def responsibility() -> Responsibility:
    return Responsibility(_read("responsibility.json"))


@cache
def registry(path: str = "") -> Registry:
    """The packaged registry, or the file at ``path`` (``Settings.liaisons_file``)."""
    return Registry(_read("liaisons.json", path))
