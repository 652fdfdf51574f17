"""The responsibility matrix and the liaison registry (data files, no I/O beyond reading them)."""

from __future__ import annotations

import json

import pytest

from services.kit import liaisons
from services.kit.catalogue import Catalogue
from services.kit.rules import load_rules

MATRIX = liaisons.responsibility()
REGISTRY = liaisons.registry()


@pytest.mark.parametrize(("state", "route", "owner"), [
    ("AWAITING_HOLD", "BANK", "MOF"), ("JAWAZAT_QUEUE", "JAWAZAT", "JAWAZAT"),
    ("MANUAL_REVIEW", "MANUAL_REVIEW", "MOFA"), ("ORDERED", "MOFA", "MOFA"), ("ORDERED", "AUTOMATIC", "BANK"),
    ("ORDERED", "BANK", "BANK"), ("COMPLETED", "BANK", None), ("REJECTED", "JAWAZAT", None),
])
def test_matrix_names_the_owner_of_each_refund_state(state, route, owner):
    assert MATRIX.refund_owner(state, route) == owner


def test_an_unreflected_payment_belongs_to_its_own_agency():
    assert MATRIX.payment_owner("UNREFLECTED", "JAWAZAT") == "JAWAZAT"


def test_every_owner_and_route_holder_has_a_liaison_and_a_name_in_both_languages():
    catalogue = Catalogue.load()
    owners = {row["owner"] for row in json.loads(
        (liaisons.resources.files("services.kit.reference") / "responsibility.json").read_text())["refund"]}
    owners |= {route.owner for route in load_rules().routes.values()}
    for owner in owners:
        liaison = REGISTRY.for_agency(owner)
        assert liaison.agency == owner, f"{owner} escalates to MoF's fallback: add it to liaisons.json"
        assert liaison.phone.startswith("+966") and "@" in liaison.email
        for language in ("ar", "en"):
            assert catalogue.name("agency", owner, language) != owner


def test_a_bank_case_reaches_the_paying_banks_own_liaison_when_it_has_one():
    al_rajhi = "SA0380000000608010167519"
    assert REGISTRY.for_agency("BANK", al_rajhi).email.endswith("alrajhi.example")
    unknown_bank = "SA4420000001234567891234"
    assert REGISTRY.for_agency("BANK", unknown_bank).agency == "BANK"


def test_an_agency_missing_from_the_registry_falls_back_to_mof():
    assert REGISTRY.for_agency("NO_SUCH_AGENCY").agency == "MOF"


def test_a_registry_without_mof_is_refused():
    with pytest.raises(liaisons.LiaisonError):
        liaisons.Registry({"version": "x", "agencies": {"JAWAZAT": {
            "name": "n", "name_ar": "ن", "role": "r", "phone": "+966", "email": "a@b"}}})
