"""Inbound times must be plausible: not in the future beyond EVENT_TIME_MAX_FUTURE,
not before EVENT_TIME_EARLIEST (README "Times")."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.kit.envelope import DEFAULT_TIME_BOUNDS, Rejected, SchemaRegistry, TimeBounds, parse, resolve_schemas_dir
from services.kit.settings import Settings
from tests.factories import Messages, cloudevent, payment

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
REGISTRY = SchemaRegistry(resolve_schemas_dir(Settings()))
ACCEPTED = frozenset({"payment.recorded"})


def parse_payment(time: datetime, paid_at: datetime, bounds: TimeBounds | None = DEFAULT_TIME_BOUNDS):
    value = cloudevent("payment.recorded", payment(paid_at=paid_at), time=time)
    return parse(Messages()(value), REGISTRY, ACCEPTED, time_bounds=bounds, now=NOW)


def test_a_time_within_five_minutes_ahead_is_clock_skew_and_accepted():
    assert parse_payment(NOW + timedelta(minutes=4, seconds=59), NOW).time == NOW + timedelta(minutes=4, seconds=59)


@pytest.mark.parametrize("field", ["time", "paid_at"])
def test_a_time_further_in_the_future_is_rejected_invalid_time(field):
    later = NOW + timedelta(minutes=5, seconds=1)
    with pytest.raises(Rejected) as rejected:
        parse_payment(later if field == "time" else NOW, later if field == "paid_at" else NOW)
    assert rejected.value.reason_code == "invalid_time" and rejected.value.reason.startswith(f"{field} ")
    assert "in the future" in rejected.value.reason


@pytest.mark.parametrize("field", ["time", "paid_at"])
def test_a_time_before_2000_is_rejected_invalid_time(field):
    ancient = datetime(1999, 12, 31, 23, 59, tzinfo=timezone.utc)
    with pytest.raises(Rejected) as rejected:
        parse_payment(ancient if field == "time" else NOW, ancient if field == "paid_at" else NOW)
    assert rejected.value.reason_code == "invalid_time" and "before 2000-01-01" in rejected.value.reason


def test_the_bounds_come_from_the_settings_and_none_skips_them():
    bounds = TimeBounds.from_settings(Settings.from_env({"EVENT_TIME_MAX_FUTURE": "3600",
                                                         "EVENT_TIME_EARLIEST": "2020-01-01T00:00:00+03:00"}))
    assert bounds == TimeBounds(timedelta(hours=1), datetime(2019, 12, 31, 21, tzinfo=timezone.utc))
    assert parse_payment(NOW + timedelta(minutes=30), NOW, bounds)
    with pytest.raises(Rejected):
        parse_payment(NOW, datetime(2019, 6, 1, tzinfo=timezone.utc), bounds)
    assert parse_payment(NOW + timedelta(days=400), datetime(1990, 1, 1, tzinfo=timezone.utc), None)
