"""A corpus of bad partner events, each with the ``reason_code`` it must be
rejected with, mixed into a stream of valid ones (``tests/e2e/test_poison.py``).

Generated, not stored: the times are relative to when the test runs (a
"future" event must be in the future then) and the generator is seeded, so
every run sends the same corpus. ``python -m tests.poison`` prints it, one
``reason_code<TAB>label`` per line.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from schwifty import IBAN

from services.kit.identity import with_check_digit


@dataclass(frozen=True)
class Item:
    """One record to send: its logical topic, key and value; ``reason_code`` None = valid."""

    label: str
    topic: str
    key: bytes | None
    value: bytes | None
    reason_code: str | None = None
    after: int | None = None  # index of the valid record it must follow (same key: same partition, in order)


def event(event_type: str, data: Any, *, time: datetime, source: str = "bank/80",
          event_id: str | None = None, **attributes: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": source, "type": event_type,
            "time": time.isoformat(), "datacontenttype": "application/json", "data": data, **attributes}


def encode(attributes: Any) -> bytes:
    return json.dumps(attributes, ensure_ascii=False).encode()


class Corpus:
    """A valid stream (payments, acknowledgements, charges, visas) and the bad events mixed into it."""

    def __init__(self, seed: int, now: datetime | None = None, valid_payments: int = 120) -> None:
        self.rng = random.Random(seed)
        self.now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
        self.seed = seed
        self.valid: list[Item] = []
        self.bad: list[Item] = []
        self._payments: list[tuple[int, dict[str, Any], dict[str, Any]]] = []   # (index, event, data)
        for n in range(valid_payments):
            self._valid_payment(n)
        self._bad()

    # ------------------------------------------------------------------ valid
    def person(self) -> str:
        return with_check_digit(self.rng.choice("12") + f"{self.rng.randrange(10**8):08d}")

    def iban(self) -> str:
        account = f"{self.rng.randrange(10**18):018d}"
        return IBAN.generate("SA", bank_code=self.rng.choice(("10", "20", "45", "80")), account_code=account).compact

    def payment_data(self, n: int, **changes: Any) -> dict[str, Any]:
        person = self.person()
        paid = self.now - timedelta(minutes=self.rng.randint(1, 600))
        return {"payment_id": f"PZ-{self.seed}-{n:05d}", "beneficiary_id": person, "payer_id": person,
                "payer_iban": self.iban(), "agency": "JAWAZAT", "service_code": "PASSPORT_ISSUE",
                "amount": self.rng.choice((10000, 30000, 65000)), "currency": "SAR", "channel": "SADAD_ONLINE",
                "paid_at": paid.isoformat(), **changes}

    def _valid_payment(self, n: int) -> None:
        data = self.payment_data(n)
        person = data["beneficiary_id"].encode()
        paid = datetime.fromisoformat(data["paid_at"])
        recorded = event("payment.recorded", data, time=paid, source=f"bank/{data['payer_iban'][4:6]}")
        self._payments.append((len(self.valid), recorded, data))
        self.valid.append(Item(f"valid payment {n}", "payments", person, encode(recorded)))
        if n % 3:
            at = paid + timedelta(seconds=30)
            self.valid.append(Item(f"valid acknowledgement {n}", "payments", person, encode(event(
                "payment.acknowledged", {"payment_id": data["payment_id"], "acknowledged_at": at.isoformat()},
                time=at, source="nic"))))
        if n % 4 == 0:
            at = paid + timedelta(seconds=40)
            self.valid.append(Item(f"valid charge {n}", "payments", person, encode(event(
                "fee.charged", {"charge_id": f"CZ-{self.seed}-{n:05d}", "beneficiary_id": data["beneficiary_id"],
                                "agency": "JAWAZAT", "service_code": "PASSPORT_ISSUE", "amount": 5000,
                                "charged_at": at.isoformat()}, time=at, source="jawazat"))))
        if n % 10 == 0:
            sponsor = data["beneficiary_id"]
            issued = paid + timedelta(minutes=5)
            self.valid.append(Item(f"valid visa {n}", "visas", sponsor.encode(), encode(event(
                "visa.issued", self.visa_data(sponsor, n, issued, data["payment_id"]), time=issued,
                source="musaned"))))

    @staticmethod
    def visa_data(sponsor: str, n: int, issued: datetime, payment_id: str) -> dict[str, Any]:
        return {"sponsor_id": sponsor, "export_number": f"{1450000000 + n}", "serial_number": "1",
                "visa_type": "DOMESTIC_WORKER", "payment_id": payment_id, "fee": 200000,
                "issued_at": issued.isoformat()}

    # ------------------------------------------------------------------ bad
    def add(self, reason_code: str, label: str, value: bytes | None, topic: str = "payments",
            key: bytes | None = b"1012345672", after: int | None = None) -> None:
        self.bad.append(Item(label, topic, key, value, reason_code, after))

    def payment(self, label: str, reason_code: str, change: Callable[[dict[str, Any]], None] | None = None,
                envelope: Callable[[dict[str, Any]], None] | None = None, topic: str = "payments") -> None:
        """A payment.recorded that is valid but for ``change`` (to data) / ``envelope`` (to the CloudEvent)."""
        data = self.payment_data(10_000 + len(self.bad))
        attributes = event("payment.recorded", data, time=self.now - timedelta(minutes=1))
        if change:
            change(data)
        if envelope:
            envelope(attributes)
        self.add(reason_code, label, encode(attributes), topic, data.get("beneficiary_id", "x").encode()
                 if isinstance(data.get("beneficiary_id"), str) else None)

    def _bad(self) -> None:
        self._malformed()
        self._envelopes()
        self._types_and_topics()
        self._fields()
        self._amounts()
        self._ibans_and_ids()
        self._times()
        self._sizes_and_encodings()
        self._duplicates_and_conflicts()

    def _malformed(self) -> None:
        whole = encode(event("payment.recorded", self.payment_data(90_000), time=self.now))
        for cut in (1, 10, 40, 90, 150, 220, 300, len(whole) - 1):
            self.add("malformed_json", f"truncated at byte {cut}", whole[:cut])
        texts = ["{", "}", "{'specversion': '1.0'}", '{"id": "x",}', '{"id": "x" "type": "y"}', "not json at all",
                 '{"data": {"amount": 01}}', "{\"a\": tru}", '\ufeff{"specversion": "1.0"}', '{"id": "x"} trailing',
                 '{"amount": 1' + "0" * 5000 + "}"]
        for text in texts:
            self.add("malformed_json", f"malformed: {text[:30]!r}", text.encode())
        depth = 60_000
        self.add("malformed_json", "nested 60,000 deep", b"[" * depth + b"]" * depth)
        for text in ("[]", '"a string"', "42", "null", "true", '[{"specversion": "1.0"}]'):
            self.add("invalid_envelope", f"not an object: {text}", text.encode())
        self.add("empty_message", "empty value", b"")
        self.add("empty_message", "tombstone (no value)", None)

    def _envelopes(self) -> None:
        for name in ("specversion", "id", "source", "type", "time", "data"):
            self.payment(f"envelope without {name}", "invalid_envelope", envelope=lambda a, n=name: a.pop(n))
        bad_attributes = {"specversion": ["0.3", "2.0", 1.0], "id": ["", "x" * 129, 42], "source": ["", None],
                          "type": ["", 7], "time": ["2026-11-25 10:00:00+03:00", "2026-11-25T10:00:00", 1764064800,
                                                    "yesterday"],
                          "data": [[1, 2], "text", None], "datacontenttype": ["application/xml", "text/plain"]}
        for name, values in bad_attributes.items():
            for value in values:
                self.payment(f"envelope {name}={value!r:.40}", "invalid_envelope",
                             envelope=lambda a, n=name, v=value: a.__setitem__(n, v))

    def _types_and_topics(self) -> None:
        for unknown in ("payment.refunded", "PAYMENT.RECORDED", "payment.recorded.v2", "payment", "refund.cancelled",
                        "com.example.payment", "visa.revoked", "ledger.payment.deleted"):
            self.payment(f"unknown type {unknown}", "unknown_type",
                         envelope=lambda a, t=unknown: a.__setitem__("type", t))
        person = self.person()
        issued = self.now - timedelta(hours=1)
        elsewhere = {
            "visa.issued": self.visa_data(person, 9999, issued, "PZ-X"),
            "visa.cancellation_requested": {"sponsor_id": person, "export_number": "1450009999", "serial_number": "1",
                                            "requested_at": issued.isoformat(), "channel": "MUSANED"},
            "refund.requested": {"request_id": "RZ-1", "beneficiary_id": person, "agency": "JAWAZAT",
                                 "service_code": "PASSPORT_ISSUE", "amount": 100, "iban": self.iban(),
                                 "channel": "ABSHER", "requested_at": issued.isoformat()},
            "ledger.payment.recorded": {"payment_id": "PZ-L"},
            "event.rejected": {"reason_code": "x"},
        }
        for event_type, data in elsewhere.items():
            self.add("wrong_topic", f"{event_type} on payments", encode(event(event_type, data, time=issued)),
                     key=person.encode())
        for n in range(4):
            data = self.payment_data(20_000 + n)
            self.add("wrong_topic", f"payment.recorded on visas #{n}",
                     encode(event("payment.recorded", data, time=issued)), topic="visas",
                     key=data["beneficiary_id"].encode())

    def _fields(self) -> None:
        required = ("payment_id", "beneficiary_id", "payer_id", "payer_iban", "agency", "service_code", "amount",
                    "currency", "channel", "paid_at")
        for name in required:
            self.payment(f"payment without {name}", "schema_violation", lambda d, n=name: d.pop(n))
        for extra in ("note", "amount_sar", "PAYMENT_ID", "payerIban", "refund_id", ""):
            self.payment(f"payment with extra field {extra!r}", "schema_violation",
                         lambda d, n=extra: d.__setitem__(n, "x"))
        wrong_types = {"amount": ["30000", 300.5, True, None, [30000], {"value": 30000}],
                       "beneficiary_id": [1012345672], "payer_iban": [380000000608010167519],
                       "channel": [5, "CASH"], "paid_at": [1764064800], "currency": [["SAR"], "USD", "sar"],
                       "agency": ["jawazat", ""], "payment_id": ["", "has space", "x" * 65]}
        for name, values in wrong_types.items():
            for value in values:
                self.payment(f"payment {name}={value!r:.30}", "schema_violation",
                             lambda d, n=name, v=value: d.__setitem__(n, v))
        for name in ("payment_id", "acknowledged_at"):
            data = {"payment_id": "PZ-A", "acknowledged_at": self.now.isoformat()}
            data.pop(name)
            self.add("schema_violation", f"acknowledgement without {name}",
                     encode(event("payment.acknowledged", data, time=self.now, source="nic")))
        for name in ("charge_id", "beneficiary_id", "agency", "service_code", "amount", "charged_at"):
            data = {"charge_id": "CZ-X", "beneficiary_id": "1012345672", "agency": "JAWAZAT",
                    "service_code": "PASSPORT_ISSUE", "amount": 100, "charged_at": self.now.isoformat()}
            data.pop(name)
            self.add("schema_violation", f"charge without {name}",
                     encode(event("fee.charged", data, time=self.now, source="jawazat")))
        self.add("schema_violation", "visa.issued with fee as text", encode(event(
            "visa.issued", {**self.visa_data("1012345672", 8888, self.now, "PZ-V"), "fee": "2000.00"}, time=self.now,
            source="musaned")), topic="visas")

    def _amounts(self) -> None:
        for amount in (-1, -30000, 0, -(10**12), 10**11 + 1, 10**12, 10**18, 2**63, 10**30, 1e400, -1e400, 1.0):
            self.payment(f"payment amount {amount!r:.30}", "schema_violation",
                         lambda d, a=amount: d.__setitem__("amount", a))
        for amount in (-5, 0, 10**15):
            self.add("schema_violation", f"charge amount {amount}", encode(event("fee.charged", {
                "charge_id": f"CZ-A{amount}", "beneficiary_id": "1012345672", "agency": "JAWAZAT",
                "service_code": "PASSPORT_ISSUE", "amount": amount, "charged_at": self.now.isoformat()},
                time=self.now, source="jawazat")))

    def _ibans_and_ids(self) -> None:
        for n in range(15):
            iban = self.iban()
            check = int(iban[2:4])
            wrong = f"{(check + 1 + self.rng.randrange(90)) % 97:02d}"
            if wrong == iban[2:4]:
                wrong = f"{(check + 1) % 97:02d}"
            bad = iban[:2] + wrong + iban[4:]
            self.payment(f"payer_iban with a wrong checksum #{n} ({bad})", "invalid_iban",
                         lambda d, b=bad: d.__setitem__("payer_iban", b))
        for n in range(3):
            iban = self.iban()
            swapped = iban[:10] + iban[11] + iban[10] + iban[12:]
            if swapped != iban:
                self.payment(f"payer_iban with two digits swapped #{n}", "invalid_iban",
                             lambda d, b=swapped: d.__setitem__("payer_iban", b))
        for n in range(10):
            good = self.person()
            bad = good[:9] + str((int(good[9]) + 1 + n % 9) % 10)
            field_name = ("beneficiary_id", "payer_id")[n % 2]
            self.payment(f"{field_name} with a wrong check digit #{n}", "invalid_person_id",
                         lambda d, f=field_name, b=bad: d.__setitem__(f, b))

    def _times(self) -> None:
        for ahead in (timedelta(minutes=6), timedelta(hours=1), timedelta(days=1), timedelta(days=365 * 30)):
            at = (self.now + ahead).isoformat()
            self.payment(f"time {ahead} in the future", "invalid_time",
                         envelope=lambda a, t=at: a.__setitem__("time", t))
            self.payment(f"paid_at {ahead} in the future", "invalid_time", lambda d, t=at: d.__setitem__("paid_at", t))
        tomorrow = (self.now + timedelta(days=1)).isoformat()
        self.add("invalid_time", "acknowledged_at a day in the future", encode(event(
            "payment.acknowledged", {"payment_id": "PZ-F", "acknowledged_at": tomorrow}, time=self.now, source="nic")))
        for year in (1999, 1970, 1900, 1):
            at = datetime(year, 6, 1, 12, tzinfo=timezone.utc).isoformat()
            self.payment(f"time in {year}", "invalid_time", envelope=lambda a, t=at: a.__setitem__("time", t))
            self.payment(f"paid_at in {year}", "invalid_time", lambda d, t=at: d.__setitem__("paid_at", t))
        for text in ("2026-02-30T10:00:00+03:00", "2026-13-01T10:00:00+03:00", "2026-11-25T24:30:00+03:00",
                     "2026-11-25T10:61:00+03:00", "2026-12-31T23:59:60+03:00"):
            self.payment(f"paid_at {text} names no instant", "invalid_time",
                         lambda d, t=text: d.__setitem__("paid_at", t))
        for text in ("2026-11-25T10:00:00", "2026-11-25", "25/11/2026 10:00", "2026-11-25T10:00:00+3"):
            self.payment(f"paid_at {text!r} without an offset / not RFC 3339", "schema_violation",
                         lambda d, t=text: d.__setitem__("paid_at", t))

    def _sizes_and_encodings(self) -> None:
        for size in (256 * 1024 + 1, 300_000, 600_000):
            self.payment(f"oversized payload ({size} bytes of padding)", "oversized_payload",
                         lambda d, s=size: d.__setitem__("note", "x" * s))
        whole = encode(event("payment.recorded", self.payment_data(91_000), time=self.now))
        broken = {"lone 0xff": b"\xff", "0xfe 0xff start": b"\xfe\xff" + whole,
                  "overlong slash": whole.replace(b'"SAR"', b'"SAR\xc0\xaf"'),
                  "truncated 2-byte": whole.replace(b'"SAR"', b'"SAR\xc3"'),
                  "encoded surrogate": whole.replace(b'"SAR"', b'"\xed\xa0\x80"'),
                  "latin-1 text": '{"source": "bank/80", "note": "caf\xe9"}'.encode("latin-1"),
                  "cp1256 arabic": '{"note": "\u0645\u0631\u062d\u0628\u0627"}'.encode("cp1256"),
                  "utf-16": whole.decode().encode("utf-16")}
        for label, value in broken.items():
            self.add("invalid_utf8", f"invalid UTF-8: {label}", value)
        for label, escaped in {"lone high surrogate in source": '"bank/\\ud800"',
                               "lone low surrogate in id": '"\\udfff"'}.items():
            attribute = "source" if "source" in label else "id"
            text = whole.decode().replace(f'"{attribute}": ', f'"{attribute}": {escaped}, "x-{attribute}": ', 1)
            self.add("invalid_utf8", f"escaped {label}", text.encode())

    def _duplicates_and_conflicts(self) -> None:
        """Re-sent CloudEvent ids with other content, and business facts that contradict earlier ones."""
        for index, recorded, data in self._payments[:12]:
            changed = {**recorded, "data": {**data, "amount": data["amount"] + 100}}
            self.add("duplicate_id_conflict", f"payment {data['payment_id']} re-sent, same id, other amount",
                     encode(changed), key=data["beneficiary_id"].encode(), after=index)
        for index, recorded, data in self._payments[12:18]:
            conflicting = event("payment.recorded", {**data, "amount": data["amount"] * 2}, time=self.now,
                                source=recorded["source"])
            self.add("payment_conflict", f"payment {data['payment_id']} again (new id) with another amount",
                     encode(conflicting), key=data["beneficiary_id"].encode(), after=index)
        for n in range(5):
            self.add("unknown_payment", f"acknowledgement of a payment never recorded #{n}", encode(event(
                "payment.acknowledged", {"payment_id": f"PZ-NONE-{n}", "acknowledged_at": self.now.isoformat()},
                time=self.now, source="nic")))
        for n in range(5):
            person = self.person()
            self.add("insufficient_balance", f"fee charged where nothing was paid #{n}", encode(event(
                "fee.charged", {"charge_id": f"CZ-NONE-{n}", "beneficiary_id": person, "agency": "JAWAZAT",
                                "service_code": "PASSPORT_ISSUE", "amount": 100, "charged_at": self.now.isoformat()},
                time=self.now, source="jawazat")), key=person.encode())
        for index, _, data in self._payments[18:22]:
            self.add("insufficient_balance", f"fee above what {data['payment_id']} paid", encode(event(
                "fee.charged", {"charge_id": f"CZ-OVER-{data['payment_id']}", "beneficiary_id": data["beneficiary_id"],
                                "agency": "JAWAZAT", "service_code": "PASSPORT_ISSUE", "amount": data["amount"] + 1,
                                "charged_at": self.now.isoformat()}, time=self.now, source="jawazat")),
                key=data["beneficiary_id"].encode(), after=index)

    # ------------------------------------------------------------------ the stream
    def stream(self) -> list[Item]:
        """Valid and bad records interleaved (seeded); a bad record that contradicts a valid one comes after it."""
        keyed: list[tuple[float, int, Item]] = [(float(i), 0, item) for i, item in enumerate(self.valid)]
        for n, item in enumerate(self.bad):
            low = item.after + 0.5 if item.after is not None else -0.5
            keyed.append((self.rng.uniform(low, len(self.valid)), 1 + n, item))
        return [item for _, _, item in sorted(keyed, key=lambda k: (k[0], k[1]))]


if __name__ == "__main__":
    corpus = Corpus(seed=1)
    for item in corpus.bad:
        print(f"{item.reason_code}\t{item.label}")
    print(f"{len(corpus.bad)} bad, {len(corpus.valid)} valid")
