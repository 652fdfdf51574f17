"""The versioned rules file: windows, deadlines, visa types, the calendar.

Rules are data (``reference/rules.json`` unless ``RULES_FILE`` names another
file). Every decision event records ``Rules.version``, so an auditor can tell
years later which rules sent a case where it went. Pure: no I/O after load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any


class RulesError(ValueError):
    """Raised when the rules file is missing a key or holds a wrong value."""


@dataclass(frozen=True)
class Deadline:
    """How long a route may take: Saudi business days or calendar days."""

    business_days: int = 0
    calendar_days: int = 0


@dataclass(frozen=True)
class Route:
    name: str
    owner: str          # the agency that owns the next step while the case is on this route
    deadline: Deadline


@dataclass(frozen=True)
class Rules:
    version: str
    automatic_cancellation_window: timedelta
    unreflected_payment_after: timedelta
    covid_from: date
    covid_to: date                      # inclusive
    refundable_visa_types: frozenset[str]
    non_refundable_visa_types: frozenset[str]
    routes: dict[str, Route]
    weekend: tuple[str, ...]
    timezone: str
    extra_holidays: tuple[date, ...]
    cancelled_holidays: tuple[date, ...]
    #: Above this amount (halalas) a Jawazat approval needs a second, different employee (four eyes);
    #: None: one approval suffices at any amount.
    four_eyes_above: int | None = None

    def needs_four_eyes(self, amount: int) -> bool:
        return self.four_eyes_above is not None and amount > self.four_eyes_above

    def route(self, name: str) -> Route:
        try:
            return self.routes[name]
        except KeyError:
            raise RulesError(f"no route {name!r} in rules {self.version}") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Rules:
        try:
            routes = {
                name: Route(name, spec["owner"], Deadline(**spec["deadline"]))
                for name, spec in raw["routes"].items()
            }
            calendar = raw["calendar"]
            return cls(
                version=str(raw["version"]),
                automatic_cancellation_window=timedelta(hours=raw["automatic_cancellation_window_hours"]),
                unreflected_payment_after=timedelta(hours=raw["unreflected_payment_after_hours"]),
                covid_from=date.fromisoformat(raw["covid_window"]["from"]),
                covid_to=date.fromisoformat(raw["covid_window"]["to"]),
                refundable_visa_types=frozenset(raw["refundable_visa_types"]),
                non_refundable_visa_types=frozenset(raw["non_refundable_visa_types"]),
                routes=routes,
                weekend=tuple(day.upper() for day in calendar["weekend"]),
                timezone=calendar["timezone"],
                extra_holidays=tuple(date.fromisoformat(d) for d in calendar.get("extra_holidays", [])),
                cancelled_holidays=tuple(date.fromisoformat(d) for d in calendar.get("cancelled_holidays", [])),
                four_eyes_above=_halalas(raw.get("four_eyes_above_halalas")),
            )
        except KeyError as error:
            raise RulesError(f"rules file is missing {error.args[0]!r}") from None
        except (TypeError, ValueError) as error:
            raise RulesError(f"rules file has a wrong value: {error}") from None


def _halalas(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"four_eyes_above_halalas must be a whole number of halalas >= 0, not {value!r}")
    return value


def load_rules(path: str | Path | None = None) -> Rules:
    """The rules in ``path``, or the packaged ``reference/rules.json``."""
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = resources.files("services.kit").joinpath("reference/rules.json").read_text(encoding="utf-8")
    return Rules.from_dict(json.loads(text))
