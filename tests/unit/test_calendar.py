"""The Saudi business calendar: weekends, official holidays, rule overrides, deadlines in UTC, SLA status."""

import json
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

import holidays
import pytest

from services.kit.calendar import DUE_SOON, ON_TIME, OVERDUE, BusinessCalendar, CalendarError
from services.kit.rules import Deadline, Route, Rules, RulesError, load_rules

RIYADH = ZoneInfo("Asia/Riyadh")
RULES = load_rules()
CALENDAR = BusinessCalendar.from_rules(RULES)


def riyadh(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=RIYADH)


def end_of_riyadh_day(year: int, month: int, day: int) -> datetime:
    """23:59:59.999999 in Riyadh (UTC+3) is 20:59:59.999999 UTC the same day."""
    return datetime(year, month, day, 20, 59, 59, 999999, tzinfo=UTC)


def calendar_with(**changes) -> BusinessCalendar:
    raw = json.loads(resources.files("services.kit").joinpath("reference/rules.json").read_text(encoding="utf-8"))
    raw["version"] = "test-override"
    raw["calendar"].update(changes)
    return BusinessCalendar.from_rules(Rules.from_dict(raw))


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# -- weekend ------------------------------------------------------------------

def test_thursday_evening_request_is_due_end_of_tuesday():
    due = CALENDAR.add_business_days(riyadh(2026, 11, 19, 19, 45), 3)   # Thursday
    assert due == end_of_riyadh_day(2026, 11, 24)                         # Tuesday
    assert due.tzinfo is UTC
    assert due.astimezone(RIYADH).strftime("%A %H:%M:%S.%f") == "Tuesday 23:59:59.999999"


@pytest.mark.parametrize("start", [
    pytest.param(riyadh(2026, 11, 20, 9), id="friday"),
    pytest.param(riyadh(2026, 11, 21, 23, 59), id="saturday"),
])
def test_request_on_the_weekend_counts_from_sunday(start):
    assert CALENDAR.add_business_days(start, 1) == end_of_riyadh_day(2026, 11, 22)   # Sunday
    assert CALENDAR.add_business_days(start, 3) == end_of_riyadh_day(2026, 11, 24)   # Tuesday


def test_the_request_day_never_counts_even_on_a_business_day():
    assert CALENDAR.add_business_days(riyadh(2026, 11, 22, 0, 1), 3) == end_of_riyadh_day(2026, 11, 25)


def test_zero_days_means_the_end_of_the_request_day():
    assert CALENDAR.add_business_days(riyadh(2026, 11, 20), 0) == end_of_riyadh_day(2026, 11, 20)
    assert CALENDAR.add_calendar_days(riyadh(2026, 11, 20), 0) == end_of_riyadh_day(2026, 11, 20)


def test_friday_and_saturday_are_the_weekend():
    week = days(date(2026, 11, 15), date(2026, 11, 21))                  # Sunday .. Saturday
    assert [CALENDAR.is_business_day(d) for d in week] == [True] * 5 + [False, False]
    assert CALENDAR.holiday_name(date(2026, 11, 20)) is None             # a weekend day is not a holiday


# -- holidays from the `holidays` package --------------------------------------

def test_library_gives_the_expected_2026_holidays():
    assert CALENDAR.holidays_in(2026) == {
        date(2026, 2, 22): "Founding Day Holiday",
        date(2026, 3, 19): "Eid al-Fitr Holiday",
        date(2026, 3, 20): "Eid al-Fitr Holiday",                        # 1 Shawwal 1447 (estimated)
        date(2026, 3, 21): "Eid al-Fitr Holiday",
        date(2026, 3, 22): "Eid al-Fitr Holiday",
        date(2026, 3, 23): "Eid al-Fitr Holiday (observed)",
        date(2026, 3, 24): "Eid al-Fitr Holiday (observed)",
        date(2026, 5, 26): "Day of Arafah",
        date(2026, 5, 27): "Eid al-Adha Holiday",                        # 10 Dhu al-Hijjah 1447 (estimated)
        date(2026, 5, 28): "Eid al-Adha Holiday",
        date(2026, 5, 29): "Eid al-Adha Holiday",
        date(2026, 5, 31): "Eid al-Adha Holiday (observed)",
        date(2026, 9, 23): "National Day Holiday",
    }


def test_deadline_jumps_over_the_whole_eid_al_fitr_2026_block():
    block = days(date(2026, 3, 19), date(2026, 3, 24))                  # Thursday .. Tuesday
    assert all(not CALENDAR.is_business_day(d) for d in block)
    assert CALENDAR.is_business_day(date(2026, 3, 18)) and CALENDAR.is_business_day(date(2026, 3, 25))
    # Wednesday 18 March: Wed 25, Thu 26, (Fri, Sat), Sun 29.
    assert CALENDAR.add_business_days(riyadh(2026, 3, 18, 16), 3) == end_of_riyadh_day(2026, 3, 29)


def test_deadline_jumps_over_arafah_and_eid_al_adha_2026():
    assert all(not CALENDAR.is_business_day(d) for d in days(date(2026, 5, 26), date(2026, 5, 31)))
    # Monday 25 May: Arafah Tue 26, Eid Wed 27 - Fri 29, Sat 30, observed Sun 31; then Mon 1, Tue 2, Wed 3 June.
    assert CALENDAR.add_business_days(riyadh(2026, 5, 25, 10), 3) == end_of_riyadh_day(2026, 6, 3)


def test_national_day_2026_is_a_wednesday_off():
    assert date(2026, 9, 23).strftime("%A") == "Wednesday"
    assert CALENDAR.holiday_name(date(2026, 9, 23)) == "National Day Holiday"
    # Monday 21 September: Tue 22, (Wed 23 holiday), Thu 24, (Fri, Sat), Sun 27.
    assert CALENDAR.add_business_days(riyadh(2026, 9, 21), 3) == end_of_riyadh_day(2026, 9, 27)


def test_founding_day_is_off_and_moves_to_sunday_when_it_falls_on_saturday():
    # 2026: Sunday 22 February. Thursday 19th: (Sun 22), Mon 23, Tue 24, Wed 25.
    assert CALENDAR.add_business_days(riyadh(2026, 2, 19), 3) == end_of_riyadh_day(2026, 2, 25)
    # 2025: Saturday 22 February, compensated on Sunday 23rd.
    assert CALENDAR.holiday_name(date(2025, 2, 23)) == "Founding Day Holiday (observed)"
    assert not CALENDAR.is_business_day(date(2025, 2, 23))


# -- overrides from the rules ------------------------------------------------

def test_an_extra_holiday_from_the_rules_is_skipped():
    calendar = calendar_with(extra_holidays=["2026-11-24"])
    assert calendar.holiday_name(date(2026, 11, 24)) == "Extra holiday (rules test-override)"
    # Thursday 19 November: Sun 22, Mon 23, (Tue 24 extra holiday), Wed 25.
    assert calendar.add_business_days(riyadh(2026, 11, 19, 19), 3) == end_of_riyadh_day(2026, 11, 25)
    assert CALENDAR.add_business_days(riyadh(2026, 11, 19, 19), 3) == end_of_riyadh_day(2026, 11, 24)


def test_a_cancelled_holiday_becomes_a_business_day():
    calendar = calendar_with(cancelled_holidays=["2026-09-23"])
    assert calendar.holiday_name(date(2026, 9, 23)) is None
    assert calendar.is_business_day(date(2026, 9, 23))
    assert calendar.add_business_days(riyadh(2026, 9, 21), 3) == end_of_riyadh_day(2026, 9, 24)


def test_rejects_a_day_that_is_both_extra_and_cancelled():
    with pytest.raises(RulesError, match="both extra and cancelled"):
        calendar_with(extra_holidays=["2026-11-24"], cancelled_holidays=["2026-11-24"])


@pytest.mark.parametrize(("changes", "problem"), [
    pytest.param({"weekend": ["FRIDAY", "SABBATH"]}, "unknown days", id="unknown weekend day"),
    pytest.param({"timezone": "Asia/Nowhere"}, "not a known IANA zone", id="unknown timezone"),
])
def test_rejects_a_calendar_the_rules_cannot_describe(changes, problem):
    with pytest.raises(RulesError, match=problem):
        calendar_with(**changes)


# -- routes ---------------------------------------------------------------------

def test_mofa_route_is_15_calendar_days_ignoring_weekends_and_holidays():
    # Sunday 15 March 2026 + 15 days crosses the Eid al-Fitr block and two weekends: Monday 30 March.
    assert CALENDAR.deadline(RULES.route("MOFA"), riyadh(2026, 3, 15, 10)) == end_of_riyadh_day(2026, 3, 30)


def test_bank_route_is_3_business_days():
    assert CALENDAR.deadline(RULES.route("BANK"), riyadh(2026, 11, 19, 19)) == end_of_riyadh_day(2026, 11, 24)


@pytest.mark.parametrize("spec", [Deadline(), Deadline(business_days=3, calendar_days=15)])
def test_rejects_a_route_without_exactly_one_kind_of_deadline(spec):
    with pytest.raises(RulesError, match="exactly one"):
        CALENDAR.deadline(Route("ODD", "MOF", spec), riyadh(2026, 11, 19))


# -- timezones ------------------------------------------------------------------

def test_late_utc_evening_is_already_the_next_day_in_riyadh():
    start = datetime(2026, 11, 25, 22, 30, tzinfo=UTC)                   # Wednesday in UTC
    assert CALENDAR.local_date(start) == date(2026, 11, 26)              # Thursday 01:30 in Riyadh
    # Thursday: Sun 29, Mon 30, Tue 1 December (counting from Wednesday would give Monday 30).
    assert CALENDAR.add_business_days(start, 3) == end_of_riyadh_day(2026, 12, 1)
    assert CALENDAR.add_calendar_days(start, 15) == end_of_riyadh_day(2026, 12, 11)


def test_rejects_naive_datetimes_and_datetimes_given_as_dates():
    with pytest.raises(CalendarError, match="no timezone"):
        CALENDAR.add_business_days(datetime(2026, 11, 19, 12), 3)        # naive on purpose
    with pytest.raises(CalendarError, match="is a datetime"):
        CALENDAR.is_business_day(riyadh(2026, 11, 20))
    with pytest.raises(CalendarError, match="negative"):
        CALENDAR.add_business_days(riyadh(2026, 11, 19), -1)


# -- business days elapsed ----------------------------------------------------

def test_business_days_between_counts_after_the_start_day_through_the_end_day():
    thursday = riyadh(2026, 11, 19, 19)
    assert CALENDAR.business_days_between(thursday, riyadh(2026, 11, 19, 23)) == 0
    assert CALENDAR.business_days_between(thursday, riyadh(2026, 11, 21)) == 0    # Fri, Sat
    assert CALENDAR.business_days_between(thursday, riyadh(2026, 11, 22, 0, 5)) == 1
    assert CALENDAR.business_days_between(thursday, riyadh(2026, 11, 24, 23)) == 3
    assert CALENDAR.business_days_between(thursday, riyadh(2026, 11, 10)) == 0    # end before start
    # Eid al-Fitr 2026: from Wednesday 18 March to Sunday 29 March only Wed 25, Thu 26, Sun 29 count.
    assert CALENDAR.business_days_between(riyadh(2026, 3, 18), riyadh(2026, 3, 29)) == 3


def test_business_days_between_agrees_with_add_business_days_and_a_day_by_day_count():
    calendar = calendar_with(extra_holidays=["2026-11-24"], cancelled_holidays=["2026-09-23"])
    for offset in range(0, 730, 3):
        start = riyadh(2025, 12, 1, 18) + timedelta(days=offset)
        for n in (0, 1, 3, 10):
            assert calendar.business_days_between(start, calendar.add_business_days(start, n)) == n
    first, last = date(2025, 1, 1), date(2027, 12, 31)
    by_hand = sum(calendar.is_business_day(d) for d in days(first + timedelta(days=1), last))
    assert calendar.business_days_between(riyadh(2025, 1, 1), riyadh(2027, 12, 31)) == by_hand


# -- SLA status -----------------------------------------------------------------

def test_sla_status_boundaries():
    deadline = end_of_riyadh_day(2026, 11, 24)
    tick = timedelta(microseconds=1)
    assert BusinessCalendar.sla_status(deadline, deadline - timedelta(days=1) - tick) == ON_TIME
    assert BusinessCalendar.sla_status(deadline, deadline - timedelta(days=1)) == DUE_SOON
    assert BusinessCalendar.sla_status(deadline, deadline) == DUE_SOON
    assert BusinessCalendar.sla_status(deadline, deadline + tick) == OVERDUE
    assert CALENDAR.sla_status(deadline, deadline - timedelta(hours=3), due_soon=timedelta(hours=2)) == ON_TIME
    assert CALENDAR.sla_status(deadline, deadline - timedelta(hours=3), due_soon=timedelta(0)) == ON_TIME
    # The same instant written in Riyadh time compares equal: 23:59:59.999999 local is the deadline.
    assert CALENDAR.sla_status(deadline, datetime(2026, 11, 24, 23, 59, 59, 999999, tzinfo=RIYADH)) == DUE_SOON
    assert CALENDAR.sla_status(deadline, riyadh(2026, 11, 25, 0, 0)) == OVERDUE


def test_sla_status_rejects_naive_times_and_a_negative_window():
    deadline = end_of_riyadh_day(2026, 11, 24)
    with pytest.raises(CalendarError):
        BusinessCalendar.sla_status(deadline, datetime(2026, 11, 24, 12))  # naive on purpose
    with pytest.raises(CalendarError):
        BusinessCalendar.sla_status(deadline, deadline, due_soon=timedelta(hours=-1))


def test_holidays_are_computed_once_per_year_per_calendar(monkeypatch):
    computed = []
    real = holidays.country_holidays

    def counting_country_holidays(*args, **kwargs):
        computed.append(kwargs["years"])
        return real(*args, **kwargs)

    monkeypatch.setattr(holidays, "country_holidays", counting_country_holidays)
    calendar = calendar_with()
    for d in days(date(2026, 1, 1), date(2027, 12, 31)):
        calendar.is_business_day(d)
        calendar.holiday_name(d)
    calendar.business_days_between(riyadh(2026, 1, 1), riyadh(2027, 12, 31))
    assert computed == [2026, 2027]
