"""Saudi IBANs: ISO 13616 validation, the bank a code belongs to, masking for display."""

import json
from pathlib import Path

import pytest

from services.kit.errors import Rejected
from services.kit.iban import bank_code, bank_name, check_saudi_iban, mask
from tests.factories import IBAN_BAD_CHECKSUM, IBAN_OTHER, IBAN_OWN

BANKS = json.loads((Path(__file__).resolve().parents[2] / "services" / "kit" / "reference" / "saudi_banks.json")
                   .read_text(encoding="utf-8"))


def test_accepts_a_valid_saudi_iban_in_compact_form():
    assert check_saudi_iban(IBAN_OWN) == IBAN_OWN
    assert check_saudi_iban(IBAN_OTHER) == IBAN_OTHER


def test_accepts_a_printed_iban_and_returns_it_compact():
    assert check_saudi_iban("SA03 8000 0000 6080 1016 7519") == IBAN_OWN


@pytest.mark.parametrize(("value", "problem"), [
    pytest.param(IBAN_BAD_CHECKSUM, "Invalid checksum digits", id="bad checksum"),
    pytest.param("SA0380000000608010167518", "Invalid checksum digits", id="one digit mistyped"),
    pytest.param("SA038000000060801016751", "Invalid IBAN length", id="one digit short"),
    pytest.param("SA03800000006080101675190", "Invalid IBAN length", id="one digit long"),
])
def test_rejects_an_iban_that_is_not_valid(value, problem):
    with pytest.raises(Rejected) as caught:
        check_saudi_iban(value, "payer_iban")
    assert caught.value.reason_code == "invalid_iban"
    assert caught.value.reason.startswith(f"payer_iban {value!r} is not a valid IBAN")
    assert problem in caught.value.reason


@pytest.mark.parametrize(("value", "country"), [
    ("DE89370400440532013000", "DE"),   # valid German IBAN
    ("AE070331234567890123456", "AE"),  # valid UAE IBAN
])
def test_rejects_a_valid_iban_from_another_country(value, country):
    with pytest.raises(Rejected) as caught:
        check_saudi_iban(value, "iban")
    assert caught.value.reason_code == "invalid_iban"
    assert caught.value.reason == f"iban must be a Saudi (SA) IBAN, got {country}"


def test_bank_code_is_the_two_digits_after_the_check_digits():
    assert bank_code(IBAN_OWN) == "80"
    assert bank_code(IBAN_OTHER) == "20"


def test_bank_name_for_known_codes_in_english_and_arabic():
    assert bank_name(IBAN_OWN) == "Al Rajhi Bank" == BANKS["80"]["en"]
    assert bank_name(IBAN_OWN, "ar") == BANKS["80"]["ar"]
    assert bank_name(IBAN_OTHER) == "Riyad Bank" == BANKS["20"]["en"]


def test_bank_name_of_an_unknown_code_is_none():
    assert "99" not in BANKS
    assert bank_name("SA0399000000608010167519") is None


def test_mask_shows_only_the_last_four_characters():
    masked = mask(IBAN_OWN)
    assert masked == "*" * 20 + "7519"
    assert len(masked) == len(IBAN_OWN)
    assert mask("1012345672") == "******5672"


def test_mask_can_keep_a_different_number_of_characters():
    assert mask(IBAN_OWN, keep=6) == "*" * 18 + "167519"


def test_mask_hides_a_value_no_longer_than_what_it_would_keep():
    assert mask("5678") == "****"
    assert mask("12") == "**"


def test_mask_of_nothing_is_nothing():
    assert mask(None) is None
