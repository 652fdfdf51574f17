"""Language-independent formatting of facts: money, Riyadh time, Hijri dates,
masking, and how many SMS segments a text costs.

The words around these values (currency name, month names, "at", "AH") are
in the language files; this module only computes. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

from hijridate import Gregorian

from services.kit.iban import mask

#: Saudi Arabia has one time zone and no daylight saving; the rules file names the same zone.
RIYADH = ZoneInfo("Asia/Riyadh")

# GSM 03.38: the characters one 7-bit septet carries, and those the escape table carries in two.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€")
GSM7_SINGLE, GSM7_PART = 160, 153   # septets in one SMS / in each part of a concatenated SMS
UCS2_SINGLE, UCS2_PART = 70, 67     # UTF-16 code units, likewise (Arabic always goes as UCS-2)

_VISA_REFUND_ID = re.compile(r"^V-([12][0-9]{9})-(.+)$")


def sar(halalas: int) -> str:
    """Halalas as riyals with two decimals and thousands grouped: 200000 -> '2,000.00'."""
    if isinstance(halalas, bool) or not isinstance(halalas, int):
        raise TypeError(f"an amount must be whole halalas (int), got {halalas!r}")
    if halalas < 0:
        raise ValueError(f"an amount is never negative, got {halalas}")
    riyals, rest = divmod(halalas, 100)
    return f"{riyals:,}.{rest:02d}"


def riyadh_time(value: str | datetime) -> datetime:
    """An aware time (RFC 3339 text or datetime) in Riyadh time; a time without an offset is refused."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a time, got {value!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"time {value!r} has no offset: it does not name one instant")
    return moment.astimezone(RIYADH)


def hijri(day: date) -> tuple[int, int, int] | None:
    """(year, month, day) in the Umm al-Qura calendar, or None outside its range (1924-2077)."""
    try:
        h = Gregorian(day.year, day.month, day.day).to_hijri()
    except OverflowError:
        return None
    return h.year, h.month, h.day


def mask_iban(iban: str) -> str:
    """Only the last four characters of an account show: 'SA03...7519' -> '****7519'."""
    return "****" + iban[-4:] if len(iban) > 4 else "*" * len(iban)


def mask_person_id(person_id: str) -> str:
    """A national ID or iqama, as the audit API masks it: '1012345672' -> '******5672'."""
    return mask(person_id) or ""


def mask_case_reference(reference: str) -> str:
    """A case reference a citizen can quote. Visa refund ids are opaque (``V-1F64B4C815EB50E2``) and show
    as they are; one in the older ``V-<sponsor>-<export>-<serial>`` form would disclose the sponsor's ID,
    so that part is masked."""
    found = _VISA_REFUND_ID.match(reference)
    return f"V-{mask_person_id(found[1])}-{found[2]}" if found else reference


def is_gsm7(text: str) -> bool:
    """True when the text goes as 7-bit GSM (160 characters per SMS), not UCS-2 (70)."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def sms_segments(text: str) -> int:
    """How many SMS the text costs, by the encoding a gateway must use for it."""
    if is_gsm7(text):
        units = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
        single, part = GSM7_SINGLE, GSM7_PART
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part = UCS2_SINGLE, UCS2_PART
    return 1 if units <= single else math.ceil(units / part)
