"""The Saudi business calendar that turns a route's deadline into a moment in time.

Built from ``Rules``: the weekend and timezone come from the rules' calendar,
official holidays from the maintained ``holidays`` package (Founding Day,
Eid al-Fitr, Day of Arafah, Eid al-Adha, National Day, and the compensation
days it adds when one of them falls on the weekend), then the rules'
``extra_holidays`` are added (announced late) and ``cancelled_holidays`` removed.

Decisions, kept here so the code and the audit view agree:

- **Which day.** Every instant is placed on a day by the rules' timezone
  (Asia/Riyadh), never by UTC: 2026-11-25T22:30Z is Thursday 26 November.
- **End of day.** A deadline is the last microsecond of a day in Riyadh,
  23:59:59.999999 local time, returned as a UTC datetime. A refund that lands
  at that instant is on time; one microsecond later it is overdue.
- **Counting.** The day of the request never counts, even when it is a
  business day: N business days means the end of the Nth business day after
  it (a Thursday-evening request with 3 days is due at the end of Tuesday; a
  Friday or Saturday request counts from Sunday). N calendar days means the
  end of the Nth day after it, weekends and holidays included. Zero days
  means the end of the request's own day.
- **Elapsed.** ``business_days_between`` counts the business days after the
  start's day up to and including the end's day, so
  ``business_days_between(start, add_business_days(start, n)) == n``.

Pure: no I/O and no clock (times are passed in). Holidays are computed once
per year per calendar object and kept on that object, never at module level.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from services.kit.rules import Route, Rules, RulesError

SlaStatus = Literal["ON_TIME", "DUE_SOON", "OVERDUE"]
ON_TIME: Final = "ON_TIME"
DUE_SOON: Final = "DUE_SOON"
OVERDUE: Final = "OVERDUE"

_WEEKDAYS: Final = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
_END_OF_DAY: Final = time(23, 59, 59, 999999)
_ONE_DAY: Final = timedelta(days=1)


class CalendarError(ValueError):
    """Raised when the calendar is given a naive datetime, a datetime for a date, or a negative span."""


class BusinessCalendar:
    """Saudi business days: weekend and holidays from the rules, answers in UTC."""

    def __init__(
        self,
        *,
        timezone: str,
        weekend: Iterable[str],
        extra_holidays: Iterable[date] = (),
        cancelled_holidays: Iterable[date] = (),
        country: str = "SA",
        language: str = "en_US",
        extra_holiday_name: str = "Extra holiday",
    ) -> None:
        try:
            self._tz: tzinfo = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise RulesError(f"calendar timezone {timezone!r} is not a known IANA zone") from None
        names = [day.upper() for day in weekend]
        unknown = [day for day in names if day not in _WEEKDAYS]
        if unknown:
            raise RulesError(f"calendar weekend has unknown days {unknown}; expected names from {list(_WEEKDAYS)}")
        self._weekend = frozenset(_WEEKDAYS.index(day) for day in names)
        self._extra = {day: extra_holiday_name for day in extra_holidays}
        self._cancelled = frozenset(cancelled_holidays)
        both = sorted(self._cancelled & self._extra.keys())
        if both:
            raise RulesError(f"calendar lists {[d.isoformat() for d in both]} as both extra and cancelled holidays")
        self._country = country
        self._language = language
        self._by_year: dict[int, dict[date, str]] = {}

    @classmethod
    def from_rules(cls, rules: Rules, *, country: str = "SA", language: str = "en_US") -> BusinessCalendar:
        """The calendar of ``rules``; extra holidays are named after the rules version that added them."""
        return cls(
            timezone=rules.timezone,
            weekend=rules.weekend,
            extra_holidays=rules.extra_holidays,
            cancelled_holidays=rules.cancelled_holidays,
            country=country,
            language=language,
            extra_holiday_name=f"Extra holiday (rules {rules.version})",
        )

    # -- days -------------------------------------------------------------

    def holidays_in(self, year: int) -> dict[date, str]:
        """The official holidays of ``year`` after the rules' additions and cancellations (a copy)."""
        return dict(self._holidays(year))

    def holiday_name(self, d: date) -> str | None:
        """The holiday on ``d``, or None (a plain weekend day is not a holiday)."""
        day = _plain_date(d)
        return self._holidays(day.year).get(day)

    def is_business_day(self, d: date) -> bool:
        """True when ``d`` is neither a weekend day nor a holiday."""
        day = _plain_date(d)
        return day.weekday() not in self._weekend and day not in self._holidays(day.year)

    def local_date(self, moment: datetime) -> date:
        """The day ``moment`` falls on in the rules' timezone."""
        return _aware(moment).astimezone(self._tz).date()

    def end_of_day(self, d: date) -> datetime:
        """23:59:59.999999 of ``d`` in the rules' timezone, as a UTC datetime."""
        return datetime.combine(_plain_date(d), _END_OF_DAY, tzinfo=self._tz).astimezone(UTC)

    # -- deadlines --------------------------------------------------------

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """The end of the ``days``-th business day after the day of ``start`` (see the module docstring)."""
        day = self.local_date(start)
        remaining = _not_negative(days)
        while remaining:
            day += _ONE_DAY
            if self.is_business_day(day):
                remaining -= 1
        return self.end_of_day(day)

    def add_calendar_days(self, start: datetime, days: int) -> datetime:
        """The end of the ``days``-th day after the day of ``start``, weekends and holidays included."""
        return self.end_of_day(self.local_date(start) + timedelta(days=_not_negative(days)))

    def deadline(self, route: Route, start: datetime) -> datetime:
        """When a case put on ``route`` at ``start`` is due; the route names business or calendar days."""
        spec = route.deadline
        if bool(spec.business_days) == bool(spec.calendar_days):
            raise RulesError(
                f"route {route.name!r} must set exactly one of deadline.business_days and deadline.calendar_days,"
                f" got {spec}"
            )
        if spec.business_days:
            return self.add_business_days(start, spec.business_days)
        return self.add_calendar_days(start, spec.calendar_days)

    def business_days_between(self, start: datetime, end: datetime) -> int:
        """Business days after the day of ``start`` up to and including the day of ``end``; 0 if end comes first."""
        first = self.local_date(start) + _ONE_DAY
        last = self.local_date(end)
        if last < first:
            return 0
        weeks, rest = divmod((last - first).days + 1, 7)
        count = weeks * (7 - len(self._weekend))
        count += sum((first.weekday() + i) % 7 not in self._weekend for i in range(rest))
        for year in range(first.year, last.year + 1):
            count -= sum(
                first <= d <= last and d.weekday() not in self._weekend for d in self._holidays(year)
            )
        return count

    @staticmethod
    def sla_status(deadline: datetime, now: datetime, due_soon: timedelta = _ONE_DAY) -> SlaStatus:
        """OVERDUE after ``deadline``; DUE_SOON when at most ``due_soon`` is left (the deadline instant
        included); ON_TIME before that."""
        if due_soon < timedelta(0):
            raise CalendarError(f"due_soon must not be negative, got {due_soon}")
        left = _aware(deadline) - _aware(now)
        if left < timedelta(0):
            return OVERDUE
        if left <= due_soon:
            return DUE_SOON
        return ON_TIME

    # -- internals --------------------------------------------------------

    def _holidays(self, year: int) -> dict[date, str]:
        found = self._by_year.get(year)
        if found is None:
            source = holidays.country_holidays(self._country, years=year, language=self._language)
            found = {d: name for d, name in source.items() if d not in self._cancelled}
            found.update((d, name) for d, name in self._extra.items() if d.year == year)
            self._by_year[year] = found
        return found


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CalendarError(f"{moment.isoformat()} has no timezone; the calendar takes timezone-aware datetimes")
    return moment


def _plain_date(d: date) -> date:
    if isinstance(d, datetime):
        raise CalendarError(f"{d.isoformat()} is a datetime; pass local_date(moment) to ask about its day")
    return d


def _not_negative(days: int) -> int:
    if days < 0:
        raise CalendarError(f"days must not be negative, got {days}")
    return days
