"""The message catalogue: every approved message renders in Arabic and English
from realistic ledger data, both languages carry the same facts, money, dates
and masks look the same everywhere, and every ledger event a citizen should
hear about has its message. Reads only the packaged catalogue and the
repository's event schemas (whose examples are the realistic data)."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hijridate import Gregorian

from services.kit.catalogue import (
    CHANNELS,
    Catalogue,
    CatalogueError,
    MissingFact,
    is_gsm7,
    read_data,
    sms_segments,
)
from services.kit.rules import load_rules
from services.refunds.application import DECLINED_RULES
from services.refunds.domain import visa_refund_id

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "events"
LEDGER = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(SCHEMAS.glob("ledger.*.json"))}

#: Ledger events that send no citizen message of their own. Each is either the same
#: moment as another event that speaks (so the citizen hears it once), or a fact the
#: citizen learns elsewhere. A type leaves this list the day it gets a message.
NOT_FOR_CITIZENS = {
    # same moment as ledger.payment.recorded, which tells the citizen about the payment
    "ledger.balance.credited": "the payment.recorded message says it",
    # a service was issued against the balance: the issuing agency tells the citizen; the balance is in Absher
    "ledger.balance.charged": "the agency that issued the service tells the citizen",
    # the refunds service closes the case with ledger.refund.rejected and the same rule, which speaks
    "ledger.balance.hold_refused": "refund.rejected.<rule> says it",
    # the bank's completion: ledger.refund.completed speaks for the same moment
    "ledger.balance.refunded": "refund.completed says it",
    # the bank's failure: ledger.refund.failed speaks for the same moment
    "ledger.balance.released": "refund.failed says it",
    # the normal path; a late acknowledgement speaks through ledger.payment.unreflected_resolved
    "ledger.payment.acknowledged": "nothing to tell: the payment was already announced",
    # Musaned's own notices cover issue, request and acceptance; the ledger speaks once the visa is routed
    "ledger.visa.issued": "Musaned tells the sponsor",
    "ledger.visa.cancellation_requested": "Musaned confirms the request; visa.routed.* follows",
    "ledger.visa.cancellation_accepted": "refund.requested (ACCEPTED, MANUAL_REVIEW) or visa.closed_non_refundable",
    # the refunds service opens the case from it as ledger.refund.requested, which speaks with the account and deadline
    "ledger.visa.refund_started": "refund.requested.visa / .manual_review says it",
    # NIC's status is visible in Absher; a status without money speaks as ledger.refund.status_mismatch
    "ledger.visa.status_changed": "refund.status_mismatch says it when no money follows",
    # four eyes: the first of two approvals changes nothing for the citizen; the order speaks after the second
    "ledger.refund.approval_recorded": "refund.ordered.jawazat says it once a second employee approves",
    # the notifier's own record of what it told whom: the telling itself, not a state change to tell
    "ledger.notification.sent": "it is the message",
    "ledger.notification.dead_lettered": "the message could not be delivered; MoF staff see it in the timeline",
    "ledger.notification.superseded": "a later message of the same burst said it",
}

VISA_REFUND_ID = visa_refund_id("1012345672", "1448001238", "3")  # opaque: V-<16 hex>
LEGACY_VISA_REFUND_ID = "V-1012345672-1448001238-3"  # the older form, which carried the sponsor's ID
IBAN = "SA0380000000608010167519"
PERSON_IDS = ("1012345672",)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture(scope="module")
def kinds() -> dict[str, str]:
    meta, _ = read_data()
    return {name: spec["kind"] for name, spec in meta["placeholders"].items()}


def example(event_type: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(LEDGER[event_type]["examples"][0])
    data.update(changes)
    return data


def facts_for(catalogue: Catalogue, key: str) -> dict[str, Any]:
    """Realistic facts for a message: its event's schema example, made to meet the message's conditions."""
    message = catalogue.messages[key]
    answer = message.answers[0]
    facts = example(answer.event, **{name: values[0] for name, values in answer.when.fields.items()})
    if "B" in message.journeys and "A" not in message.journeys and "refund_id" in facts:
        facts["refund_id"] = VISA_REFUND_ID  # a visa refund's reference, as the refunds service makes it
    return facts


def long_facts(catalogue: Catalogue, key: str, kinds: dict[str, str]) -> dict[str, Any]:
    """The same facts at their longest realistic size: large amounts, the longest month names."""
    facts = facts_for(catalogue, key)
    for name in list(facts):
        if kinds.get(name) == "amount":
            facts[name] = 99_999_999  # 999,999.99 SAR
        elif kinds.get(name) in ("datetime", "date"):
            facts[name] = "2026-12-09T23:59:00+03:00"  # December, 29 Jumada al-Akhirah
    return facts


MESSAGE_KEYS = [m["key"] for m in read_data()[0]["messages"]]
ALL_PARTS = [(key, language, channel) for key in MESSAGE_KEYS for language in ("ar", "en") for channel in CHANNELS]


# ------------------------------------------------------------------------------------------- the data


def test_the_packaged_catalogue_loads_arabic_first(catalogue):
    assert catalogue.languages == ("ar", "en")
    assert catalogue.version
    assert len(catalogue.messages) >= 30


@pytest.mark.parametrize(("key", "language", "channel"), ALL_PARTS, ids=str)
def test_every_message_renders_in_every_language_and_channel(catalogue, kinds, key, language, channel):
    facts = facts_for(catalogue, key)
    rendered = catalogue.render(key, language, channel, facts)
    text = f"{rendered.subject or ''}\n{rendered.body}"
    assert "$" not in text, text
    assert (rendered.subject is not None) == (channel == "email")
    if channel != "email":
        assert "\n" not in rendered.body
    used = catalogue.placeholders(key, channel)
    for name in used:
        kind, value = kinds[name], facts.get(name)
        if kind == "reference":
            assert str(value) in text
        elif kind == "amount":
            assert f"{value // 100:,}.{value % 100:02d}" in text
    other = catalogue.render(key, "en" if language == "ar" else "ar", channel, facts)
    assert other.body != rendered.body
    for secret in (IBAN, *PERSON_IDS):  # IBANs and IDs never appear whole
        assert secret not in text
    if "iban" in used:
        assert "****7519" in text


@pytest.mark.parametrize("key", MESSAGE_KEYS)
def test_sms_fit_three_segments_and_english_stays_gsm7(catalogue, kinds, key):
    assert catalogue.sms_max_segments == 3
    for facts in (facts_for(catalogue, key), long_facts(catalogue, key, kinds)):
        for language in catalogue.languages:
            sms = catalogue.render(key, language, "sms", facts).body
            assert sms_segments(sms) <= catalogue.sms_max_segments, (language, len(sms), sms)
        assert is_gsm7(catalogue.render(key, "en", "sms", facts).body)


def test_a_missing_fact_fails_by_name(catalogue):
    facts = example("ledger.refund.ordered")
    del facts["iban"]
    with pytest.raises(MissingFact, match=r"'iban'"):
        catalogue.render("refund.ordered", "ar", "sms", facts)
    with pytest.raises(MissingFact) as caught:  # a null is missing too
        catalogue.render("refund.ordered", "en", "email", {**facts, "iban": None})
    assert (caught.value.key, caught.value.placeholder, caught.value.fact) == ("refund.ordered", "iban", "iban")


def broken(change) -> str:
    """Load the packaged data after ``change(meta, texts)``; return the problems found."""
    meta, texts = read_data()
    change(meta, texts)
    with pytest.raises(CatalogueError) as caught:
        Catalogue.from_data(meta, texts)
    return "\n".join(caught.value.problems)


def test_a_message_missing_in_one_language_is_refused():
    problems = broken(lambda meta, texts: texts["en"]["messages"].pop("refund.ordered"))
    assert "message 'refund.ordered' has no en text" in problems


def test_the_same_text_in_both_languages_is_refused_as_untranslated():
    def copy_english(meta, texts):
        texts["ar"]["messages"]["refund.completed"]["sms"] = texts["en"]["messages"]["refund.completed"]["sms"]
    problems = broken(copy_english)
    assert "refund.completed sms is the same text in ar and en: untranslated" in problems
    assert "ar refund.completed sms has no Arabic letter" in problems


def test_a_placeholder_missing_from_one_language_is_refused():
    def drop_amount(meta, texts):
        email = texts["ar"]["messages"]["refund.completed"]["email"]
        email["body"] = [p.replace("${amount}", "") for p in email["body"]]
    problems = broken(drop_amount)
    assert "ar refund.completed email does not use declared placeholder ${amount}" in problems
    assert "refund.completed email.body carries different facts in ar and en" in problems


def test_an_untranslated_name_is_refused():
    def english_name(meta, texts):
        texts["ar"]["names"]["agency"]["JAWAZAT"] = "Jawazat"
    assert "ar agency name of JAWAZAT ('Jawazat') has no Arabic letter" in broken(english_name)


def test_an_undeclared_placeholder_is_refused():
    def add_iban(meta, texts):
        texts["en"]["messages"]["refund.completed"]["sms"] += " Account ${iban}."
    assert "en refund.completed sms uses undeclared placeholder ${iban}" in broken(add_iban)


def test_two_answers_that_could_both_match_are_refused():
    def overlap(meta, texts):
        message = next(m for m in meta["messages"] if m["key"] == "refund.ordered.jawazat")
        message["answers"] = [{"event": "ledger.refund.ordered", "when": {"decided_by": "EMP-1"}}]
    assert "ambiguous answers for ('citizen', 'ledger.refund.ordered')" in broken(overlap)


def test_every_event_a_citizen_hears_about_has_one_place_in_the_journey_order(catalogue):
    def drop_held(meta, texts):
        meta["journey_order"].remove("ledger.balance.held")
        meta["journey_order"].append("ledger.refund.requested")
    problems = broken(drop_held)
    assert "'ledger.balance.held' answers a citizen message but is not in 'journey_order'" in problems
    assert "'journey_order' lists an event twice" in problems
    assert catalogue.stage("ledger.refund.requested") < catalogue.stage("ledger.balance.held") \
        < catalogue.stage("ledger.refund.ordered") < catalogue.stage("ledger.refund.completed")


def test_an_event_in_the_journey_order_must_answer_a_citizen_message():
    def add(meta, texts):
        meta["journey_order"].append("ledger.notification.sent")
    assert "'journey_order' lists 'ledger.notification.sent', which answers no citizen message" in broken(add)


def test_english_sms_must_stay_gsm7():
    def curly(meta, texts):
        texts["en"]["messages"]["refund.completed"]["sms"] += " \u2019"  # a curly apostrophe
    assert "outside GSM-7" in broken(curly)


def test_constants_agree_with_the_rules_file(catalogue):
    """The words promise what the rules do. Arabic counted nouns follow their number
    (3 أيام عمل، 15 يوماً): when the rules change, update the constant and re-read the texts."""
    rules = load_rules()
    assert catalogue.constants["contact_centre"] == "19990"
    for route in ("BANK", "AUTOMATIC", "JAWAZAT"):
        assert str(rules.route(route).deadline.business_days) == catalogue.constants["bank_refund_business_days"]
    for route in ("MOFA", "MANUAL_REVIEW"):
        assert str(rules.route(route).deadline.calendar_days) == catalogue.constants["mofa_refund_calendar_days"]
    hours = rules.automatic_cancellation_window.total_seconds() / 3600
    assert f"{hours:g}" == catalogue.constants["automatic_cancellation_window_hours"]
    assert f"{rules.unreflected_payment_after.total_seconds() / 3600:g}" == \
        catalogue.constants["unreflected_payment_after_hours"]


# ------------------------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(("halalas", "en", "ar"), [
    (30000, "300.00 SAR", "300.00 ريال"),
    (5, "0.05 SAR", "0.05 ريال"),
    (200000, "2,000.00 SAR", "2,000.00 ريال"),
    (100_000_000_000, "1,000,000,000.00 SAR", "1,000,000,000.00 ريال"),
])
def test_amounts_are_riyals_with_two_decimals_and_western_digits(catalogue, halalas, en, ar):
    assert catalogue.format_fact("amount", halalas, "en") == en
    assert catalogue.format_fact("amount", halalas, "ar") == ar


@pytest.mark.parametrize("bad", [300.0, "30000", True, -1])
def test_amounts_must_be_whole_non_negative_halalas(catalogue, bad):
    with pytest.raises((TypeError, ValueError)):
        catalogue.format_fact("amount", bad, "en")


def test_the_hijri_library_gives_the_umm_al_qura_date():
    # The brief said 2026-11-25 is 5 Jumada al-Akhirah 1448; hijridate (Umm al-Qura) says 15, and agrees
    # with the holidays package's Saudi dates (1 Shawwal 1447 = 2026-03-20, Arafah = 2026-05-26): 1 Jumada
    # al-Akhirah 1448 is 2026-11-11, so the 5th is 2026-11-15. We assert what the library gives.
    hijri = Gregorian(2026, 11, 25).to_hijri()
    assert (hijri.year, hijri.month, hijri.day) == (1448, 6, 15)
    assert hijri.month_name("en") == "Jumada al-Akhirah"
    assert hijri.month_name("ar") == "جمادى الآخرة"


def test_citizens_see_riyadh_time_with_the_hijri_date_beside_the_gregorian(catalogue):
    assert catalogue.format_fact("datetime", "2026-11-25T10:00:00+03:00", "en") == \
        "25 November 2026 (15 Jumada al-Akhirah 1448 AH) at 10:00"
    assert catalogue.format_fact("datetime", "2026-11-25T10:00:00+03:00", "ar") == \
        "25 نوفمبر 2026م (15 جمادى الآخرة 1448هـ) الساعة 10:00"  # noqa: RUF001 (هـ is the Hijri era mark)
    # 21:30 UTC is already the next day in Riyadh (UTC+3)
    assert catalogue.format_fact("datetime", "2026-11-25T21:30:00Z", "en") == \
        "26 November 2026 (16 Jumada al-Akhirah 1448 AH) at 00:30"
    assert catalogue.format_fact("datetime", datetime.fromisoformat("2026-11-25T07:00:00+00:00"), "en") == \
        "25 November 2026 (15 Jumada al-Akhirah 1448 AH) at 10:00"
    # an SLA deadline is the end of its last day, shown as that day
    assert catalogue.format_fact("date", "2026-11-05T23:59:59.999999+03:00", "en") == \
        "5 November 2026 (25 Jumada al-Ula 1448 AH)"


def test_agencies_see_iso_dates_in_riyadh_time_without_hijri(catalogue):
    assert catalogue.format_fact("datetime", "2026-11-25T21:30:00Z", "en", "agency") == "2026-11-26 00:30 Riyadh time"
    assert catalogue.format_fact("datetime", "2026-11-25T21:30:00Z", "ar", "agency") == \
        "2026-11-26 00:30 بتوقيت الرياض"
    assert catalogue.format_fact("date", "2026-11-05T23:59:59.999999+03:00", "ar", "agency") == "2026-11-05"


def test_times_without_an_offset_are_refused_and_far_dates_drop_the_hijri(catalogue):
    with pytest.raises(ValueError, match="no offset"):
        catalogue.format_fact("datetime", "2026-11-25T10:00:00", "en")
    assert catalogue.format_fact("date", "2090-01-01T12:00:00+03:00", "en") == "1 January 2090"


def test_ibans_ids_and_visa_references_are_masked(catalogue):
    assert catalogue.format_fact("iban", IBAN, "ar") == "****7519"
    assert catalogue.format_fact("person_id", "1012345672", "en") == "******5672"
    assert catalogue.format_fact("case_reference", VISA_REFUND_ID, "en") == VISA_REFUND_ID
    assert catalogue.format_fact("case_reference", LEGACY_VISA_REFUND_ID, "en") == "V-******5672-1448001238-3"
    assert catalogue.format_fact("case_reference", "RR-80-000123", "en") == "RR-80-000123"
    assert catalogue.format_fact("bank", IBAN, "ar") == "مصرف الراجحي"
    assert catalogue.format_fact("bank", IBAN, "en") == "Al Rajhi Bank"
    assert catalogue.format_fact("bank", "SA0099000000608010167519", "en") == "your bank"


def test_every_code_the_ledger_sends_has_a_name_in_both_languages(catalogue):
    def enum(event_type: str, field: str) -> set[str]:
        schema = json.loads((SCHEMAS / f"{event_type}.json").read_text(encoding="utf-8"))
        return set(schema["properties"][field]["enum"])
    rules = load_rules()
    codes = {
        "channel": enum("payment.recorded", "channel") | enum("refund.requested", "channel")
        | enum("visa.cancellation_requested", "channel"),
        "visa_type": enum("visa.issued", "visa_type"),
        "route": enum("ledger.refund.ordered", "route") | enum("ledger.visa.cancellation_routed", "route"),
        "refund_state": enum("ledger.refund.requested", "state"),
        "agency": {route.owner for route in rules.routes.values()} | {"MOF", "MOI", "JAWAZAT", "MUSANED"},
        "service": {"PASSPORT_ISSUE", "EXIT_REENTRY", "IQAMA_RENEWAL", "TRAFFIC_FINE", "DRIVING_LICENCE", "VISA_FEE"},
    }
    for kind, wanted in codes.items():
        for language in catalogue.languages:
            missing = wanted - set(catalogue.names(kind, language))
            assert not missing, (kind, language, missing)
    assert catalogue.name("refund_state", None, "en") == "no refund case opened"


# ------------------------------------------------------------------------------------------- choosing


def test_every_ledger_event_a_citizen_should_hear_about_has_a_message(catalogue):
    assert set(NOT_FOR_CITIZENS) <= set(LEDGER), "the exclusion list names an event type that no longer exists"
    for event_type in sorted(set(LEDGER) - set(NOT_FOR_CITIZENS)):
        for data in LEDGER[event_type]["examples"]:
            assert catalogue.message_for(event_type, data) is not None, event_type
    assert not catalogue.answered_events("citizen") & set(NOT_FOR_CITIZENS), "an excluded type has a message"
    assert catalogue.answered_events() <= set(LEDGER)


def test_answers_name_real_fields_and_values_of_their_events(catalogue):
    for message in catalogue.messages.values():
        for answer in message.answers:
            properties = LEDGER[answer.event]["properties"]
            for field, values in answer.when.fields.items():
                assert field in properties, (message.key, field)
                allowed = properties[field].get("enum")
                if allowed:
                    assert {v for v in values if v is not None} <= set(allowed), (message.key, field)
            meta, _ = read_data()
            for name in message.placeholders:
                source = meta["placeholders"][name].get("from", name)
                assert source in properties, f"{message.key}: ${{{name}}} needs {source}, not in {answer.event}"


@pytest.mark.parametrize("rule", [
    *json.loads((SCHEMAS / "ledger.balance.hold_refused.json").read_text(encoding="utf-8"))
    ["properties"]["rule"]["enum"],
    *DECLINED_RULES.values(),
])
def test_each_rejection_rule_has_its_own_message(catalogue, rule):
    data = example("ledger.refund.rejected", rule=rule)
    assert catalogue.message_for("ledger.refund.rejected", data) == f"refund.rejected.{rule}"


def test_a_rejection_rule_without_words_sends_the_citizen_to_19990(catalogue):
    data = example("ledger.refund.rejected", rule="employee_rejected")
    assert catalogue.message_for("ledger.refund.rejected", data) == "refund.rejected"
    assert "19990" in catalogue.render("refund.rejected", "ar", "sms", data).body


@pytest.mark.parametrize(("route", "rule", "key"), [
    ("AUTOMATIC", "within_window", "visa.routed.automatic"),
    ("MOFA", "after_window", "visa.routed.mofa"),
    ("MANUAL_REVIEW", "covid_window", "visa.routed.manual_review.covid"),
    ("MANUAL_REVIEW", "unknown_visa_type", "visa.routed.manual_review"),
    ("MANUAL_REVIEW", "requested_before_issue", "visa.routed.manual_review"),
    ("NON_REFUNDABLE", "non_refundable_type", "visa.routed.non_refundable"),
])
def test_each_visa_route_has_its_message(catalogue, route, rule, key):
    data = example("ledger.visa.cancellation_routed", route=route, rule=rule)
    assert catalogue.message_for("ledger.visa.cancellation_routed", data) == key


@pytest.mark.parametrize(("state", "third_party", "key"), [
    ("AWAITING_HOLD", False, "refund.requested.bank"),
    ("JAWAZAT_QUEUE", False, "refund.requested.jawazat_queue"),
    ("ACCEPTED", False, "refund.requested.visa"),
    ("ACCEPTED", True, "refund.requested.visa.third_party_payer"),
    ("ACCEPTED", None, "refund.requested.visa"),
    ("MANUAL_REVIEW", False, "refund.requested.manual_review"),
    ("MANUAL_REVIEW", True, "refund.requested.manual_review.third_party_payer"),
    ("ORDERED", False, "refund.requested"),
])
def test_a_refund_request_is_announced_by_its_first_state(catalogue, state, third_party, key):
    data = example("ledger.refund.requested", state=state)
    if third_party is None:
        del data["third_party_payer"]
    else:
        data["third_party_payer"] = third_party
    assert catalogue.message_for("ledger.refund.requested", data) == key


@pytest.mark.parametrize(("route", "key"), [
    ("BANK", "refund.ordered"),
    ("JAWAZAT", "refund.ordered.jawazat"),
    ("MANUAL_REVIEW", "refund.ordered.manual_review"),
    ("AUTOMATIC", None),
    ("MOFA", None),
])
def test_an_order_speaks_unless_the_request_already_said_it(catalogue, route, key):
    data = example("ledger.refund.ordered", route=route)
    assert catalogue.message_for("ledger.refund.ordered", data) == key
    if key is None:
        assert "same step" in (catalogue.why_silent("ledger.refund.ordered", data) or "")


@pytest.mark.parametrize(("third_party", "key"), [
    (False, "payment.recorded"), (True, "payment.recorded.third_party_payer")])
def test_a_third_party_payer_is_told_the_money_goes_back_to_the_paying_account(catalogue, third_party, key):
    data = example("ledger.payment.recorded", third_party_payer=third_party, payer_id="2012345670")
    assert catalogue.message_for("ledger.payment.recorded", data) == key
    if third_party:
        body = catalogue.render(key, "en", "email", data).body
        assert "goes back to the account that paid" in body and "******5670" in body


@pytest.mark.parametrize(("event_type", "citizen", "agency"), [
    ("ledger.refund.overdue", "refund.overdue", "escalation.refund.overdue"),
    ("ledger.payment.unreflected", "payment.unreflected", "escalation.payment.unreflected"),
    ("ledger.payment.unreflected_resolved", "payment.unreflected_resolved", "escalation.payment.unreflected_resolved"),
    ("ledger.refund.status_mismatch", "refund.status_mismatch", "escalation.refund.status_mismatch"),
    ("ledger.refund.completed", "refund.completed", None),
])
def test_exceptions_reach_the_citizen_and_escalate_to_the_owning_agency(catalogue, event_type, citizen, agency):
    data = example(event_type)
    expected = {"citizen": citizen} | ({"agency": agency} if agency else {})
    assert catalogue.messages_for(event_type, data) == expected
    if agency:
        message = catalogue.messages[agency]
        assert message.audience == "agency" and message.recipient in data
        email = catalogue.render(agency, "ar", "email", data)
        assert "بيانات الحالة" in email.body or "المدرجة" in email.body


def test_overdue_and_mismatch_tell_the_citizen_to_call_19990_with_the_reference(catalogue):
    overdue = example("ledger.refund.overdue")
    for language in catalogue.languages:
        sms = catalogue.render("refund.overdue", language, "sms", overdue).body
        assert "19990" in sms and "RR-80-000123" in sms
    mismatch = example("ledger.refund.status_mismatch")
    sms = catalogue.render("refund.status_mismatch", "ar", "sms", mismatch).body
    reference = catalogue.format_fact("case_reference", mismatch["refund_id"], "ar")
    assert "19990" in sms and reference in sms and "«تم استعادة رسومها»" in sms
    assert "1012345672" not in catalogue.render("escalation.refund.status_mismatch", "en", "email", mismatch).body


# ------------------------------------------------------------------------------------------- console and FAQ


CASE = {"refund_id": "RR-80-000123", "amount": 5000, "iban": IBAN, "deadline": "2026-11-05T23:59:59.999999+03:00",
        "requested_at": "2026-11-02T10:00:00+03:00", "bank_reference": "ARB-77812",
        "completed_at": "2026-11-03T13:00:00+03:00", "owner": "BANK"}


@pytest.mark.parametrize(("state", "route", "rule", "key"), [
    ("AWAITING_HOLD", "BANK", None, "refund.requested.bank"),
    ("JAWAZAT_QUEUE", "JAWAZAT", None, "refund.requested.jawazat_queue"),
    ("MANUAL_REVIEW", "MANUAL_REVIEW", None, "refund.requested.manual_review"),
    ("ORDERED", "BANK", None, "refund.ordered"),
    ("ORDERED", "JAWAZAT", None, "refund.ordered.jawazat"),
    ("ORDERED", "MANUAL_REVIEW", None, "refund.ordered.manual_review"),
    ("ORDERED", "MOFA", None, "refund.requested.visa"),
    ("ORDERED", "AUTOMATIC", None, "refund.requested.visa"),
    ("COMPLETED", "BANK", None, "refund.completed"),
    ("REJECTED", "BANK", "iban_not_payer", "refund.rejected.iban_not_payer"),
    ("REJECTED", "JAWAZAT", "declined_by_jawazat", "refund.rejected.declined_by_jawazat"),
    ("REJECTED", "BANK", None, "refund.rejected"),
])
def test_the_console_says_what_the_citizen_was_sent(catalogue, state, route, rule, key):
    facts = {**CASE, "rule": rule} if rule else dict(CASE)
    assert catalogue.console_message(state, route, facts) == key
    for language in catalogue.languages:
        line = catalogue.tell_the_citizen(state, route, language, facts)
        assert line == catalogue.render(key, language, "sms", facts).body
        assert "\n" not in line and "$" not in line


def test_the_console_line_for_an_overdue_case_names_the_deadline_and_owner(catalogue):
    line = catalogue.tell_the_citizen("ORDERED", "BANK", "en", CASE, overdue=True)
    assert line == ("Refund RR-80-000123 is late: it was due by 5 November 2026 (25 Jumada al-Ula 1448 AH). "
                    "The case has been escalated to the party responsible: the bank.")
    assert "البنك" in catalogue.tell_the_citizen("ORDERED", "BANK", "ar", CASE, overdue=True)
    with pytest.raises(LookupError):
        catalogue.tell_the_citizen("NO_SUCH_STATE", "BANK", "en", CASE)


def test_the_faq_comes_from_the_same_catalogue_in_both_languages(catalogue):
    entries = catalogue.faq()
    assert len(entries) >= 8
    for entry in entries:
        assert set(entry.question) == set(entry.answer) == {"ar", "en"}
        assert entry.question["ar"] != entry.question["en"] and entry.answer["ar"] != entry.answer["en"]
        assert re.search("[\u0600-\u06ff]", entry.answer["ar"]) and "$" not in entry.answer["ar"] + entry.answer["en"]
        assert entry.related and all(key in catalogue.messages for key in entry.related)
    answers = " ".join(e.answer["en"] for e in entries)
    assert "19990" in answers and "3 business days" in answers and "72 hours" in answers and "15 days" in answers


def test_bilingual_email_puts_arabic_first(catalogue):
    data = example("ledger.refund.completed")
    email = catalogue.render_bilingual("refund.completed", "email", data)
    assert email.subject == "اكتمال الاسترداد RR-80-000123 | Refund RR-80-000123 completed"
    assert email.body.index("عزيزي المستفيد") < email.body.index("Dear beneficiary")


def test_a_reminder_is_the_same_message_marked_with_its_number_in_each_language(catalogue):
    facts = {"refund_id": "R-9", "beneficiary_id": "1012345672", "agency": "JAWAZAT", "route": "BANK",
             "state": "ORDERED", "owner": "BANK", "deadline": "2026-11-04T23:59:59+03:00",
             "marked_at": "2026-11-05T00:00:05+03:00"}
    first = catalogue.render("escalation.refund.overdue", "en", "email", facts)
    second = catalogue.render("escalation.refund.overdue", "en", "email", facts, reminder=2)
    assert second.subject == f"Reminder 2: {first.subject}" and second.body == first.body
    arabic = catalogue.render("escalation.refund.overdue", "ar", "sms", facts, reminder=1)
    assert arabic.body.startswith("تذكير رقم 1: ")
