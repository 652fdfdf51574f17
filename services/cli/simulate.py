"""``refund-ledger simulate``: realistic partner traffic, reproducible by seed.

The scenario is what banks, SADAD, NIC and Absher send: payments (from the
beneficiary's own account or, sometimes, a third party's), NIC
acknowledgements (most within minutes, a few never: "payment not
reflected"), service fees charged against the balance, and refunds:

* journey A, at the paying bank: most requests are valid; some name another
  account or more than the balance (rejected with the rule); the bank pays
  most orders, fails a few, answers some late (overdue cases) and some
  before the order reaches it (parked answers);
* journey B, Musaned visas: issued against a SADAD fee payment, cancelled
  within 72 hours (automatic refund) or later (MoFA), visit visas (not
  refundable), visas from the COVID window (manual review); NIC's
  FEES_RESTORED status, sometimes with no bank completion behind it;
* journey C, pre-SADAD balances from Absher: the request waits in the
  Jawazat queue for an employee.

Proportions are fields of :class:`Scenario`; the same seed gives the same traffic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from schwifty import IBAN

from services.kit.identity import with_check_digit
from services.kit.kafka import Publisher, Record, ensure_topics
from services.kit.settings import Settings
from services.kit.signatures import Keyring, requires_signature, sign_bytes
from services.refunds.domain import visa_refund_id

BANK_CODES = ("10", "15", "20", "30", "45", "55", "60", "65", "80", "05")
PAYMENT_CHANNELS = ("SADAD_ONLINE", "SADAD_ONLINE", "SADAD_ONLINE", "SADAD_ATM", "SADAD_BRANCH")
VISA_TYPES = ("DOMESTIC_WORKER", "WORK", "FAMILY", "VISIT")
SERVICES = (("JAWAZAT", "PASSPORT_ISSUE", 30000), ("JAWAZAT", "EXIT_REENTRY", 20000),
            ("JAWAZAT", "IQAMA_RENEWAL", 65000), ("MOI", "TRAFFIC_FINE", 15000),
            ("MOI", "DRIVING_LICENCE", 40000))


def cloudevent(*, source: str, event_type: str, time_: datetime, data: dict, event_id: str | None = None) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": source, "type": event_type,
        "time": time_.isoformat(), "datacontenttype": "application/json", "data": data,
    }, ensure_ascii=False).encode()


def person_id(rng: random.Random) -> str:
    return with_check_digit(rng.choice("12") + "".join(rng.choice("0123456789") for _ in range(8)))


def contact_record(person: str, at: datetime) -> Record:
    """Absher's registered contact of a person, derived from the ID (no random draw, so adding contacts
    leaves every other event of a seeded scenario as it was): a mobile; an email for one in two;
    English for one in five, Arabic for the rest."""
    digest = hashlib.sha256(person.encode()).digest()
    data = {"person_id": person, "mobile": "+9665" + f"{int.from_bytes(digest[:4], 'big') % 10**8:08d}",
            "language": "en" if digest[4] % 5 == 0 else "ar", "updated_at": (at - timedelta(days=30)).isoformat()}
    if digest[5] % 2 == 0:
        data["email"] = f"{person}@citizen.example"
    return Record("contacts", person.encode(), cloudevent(source="absher", event_type="contact.updated",
                                                          time_=at - timedelta(days=30), data=data))


def record_time(record: Record) -> datetime:
    return datetime.fromisoformat(json.loads(record.value)["time"])


def saudi_iban(rng: random.Random) -> str:
    account = "".join(rng.choice("0123456789") for _ in range(18))
    return IBAN.generate("SA", bank_code=rng.choice(BANK_CODES), account_code=account).compact


@dataclass
class Scenario:
    """An endless, seeded stream of partner events as (topic, key, value)."""

    seed: int | None = None
    third_party_share: float = 0.08
    unreflected_share: float = 0.03
    bank_refund_share: float = 0.15       # payments whose beneficiary later asks the bank for a refund
    wrong_account_share: float = 0.1      # ... naming an account that did not pay
    over_balance_share: float = 0.05      # ... for more than the balance
    bank_failure_share: float = 0.05      # orders the bank cannot pay
    bank_silent_share: float = 0.08       # orders the bank never answers (they go overdue)
    backdated_share: float = 0.1          # requests made days ago (their SLA clock already ran)
    absher_share: float = 0.03            # pre-SADAD refunds requested in Absher
    visa_share: float = 0.2               # Musaned visas issued (per payment)
    visa_cancel_share: float = 0.5        # ... later cancelled
    late_cancel_share: float = 0.4        # ... 72 hours or more after issue (MoFA)
    covid_visa_share: float = 0.05        # ... issued inside the COVID window (manual review)
    backdated_visa_share: float = 0.3     # ... cancelled days ago (deadlines, mismatches already due)

    contacts: bool = True                 # Absher publishes each new person's contact first

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._people: list[tuple[str, str]] = []
        self._paid: list[tuple[str, str, str, int]] = []
        self._fresh: list[str] = []

    def _person(self) -> tuple[str, str]:
        if self._people and self.rng.random() < 0.3:
            return self.rng.choice(self._people)
        person = (person_id(self.rng), saudi_iban(self.rng))
        self._people.append(person)
        self._fresh.append(person[0])
        if len(self._people) > 5000:
            self._people.pop(0)
        return person

    def events(self, start: datetime | None = None,
               clock: Callable[[], datetime] | None = None) -> Iterator[Record]:
        """Partner events from ``start`` on, in simulated time; with ``clock`` (live traffic),
        every event is dated at or before the clock's now, never in the future. Each new person's
        contact (from Absher) comes before their first event, when ``contacts`` is on."""
        for record in self._events(start, clock):
            if self.contacts:
                while self._fresh:
                    yield contact_record(self._fresh.pop(0), (clock() if clock else record_time(record)))
            self._fresh.clear()
            yield record

    def _events(self, start: datetime | None = None,
                clock: Callable[[], datetime] | None = None) -> Iterator[Record]:
        # without a clock simulated time runs ahead of the start: by default start two days back
        # (~170,000 events) so that no event is dated in the future (EVENT_TIME_MAX_FUTURE)
        now = start or datetime.now(timezone.utc) - (timedelta(days=2) if clock is None else timedelta())
        counter = 0
        while True:
            counter += 1
            now = clock() if clock else now + timedelta(seconds=self.rng.uniform(0.05, 2))
            beneficiary, iban = self._person()
            payer, payer_iban = (beneficiary, iban)
            if self.rng.random() < self.third_party_share:
                payer, payer_iban = self._person()
            agency, service, fee = self.rng.choice(SERVICES)
            amount = fee * self.rng.choice((1, 1, 1, 2, 3))
            payment_id = f"PAY-{self.seed or 0}-{counter:09d}"
            bank = payer_iban[4:6]
            reflected = self.rng.random() >= self.unreflected_share
            # half the never-reflected payments are days old: their 24-hour wait is already over
            paid = now - (timedelta(hours=self.rng.uniform(25, 72)) if not reflected and self.rng.random() < 0.5
                          else timedelta(seconds=self.rng.uniform(60, 600)))
            channel = self.rng.choice(PAYMENT_CHANNELS)
            # a SADAD payment quotes its bill number (derived, not drawn: the scenario's draws stay as they were)
            bill = {"sadad_bill_number": f"77{abs(self.seed or 0) % 10000:04d}{counter:09d}"} \
                if channel.startswith("SADAD_") else {}
            yield Record("payments", beneficiary.encode(), cloudevent(
                source=f"bank/{bank}", event_type="payment.recorded", time_=paid, data={
                    "payment_id": payment_id, "beneficiary_id": beneficiary, "payer_id": payer,
                    "payer_iban": payer_iban, "agency": agency, "service_code": service,
                    "amount": amount, "currency": "SAR", "channel": channel,
                    "paid_at": paid.isoformat(), **bill}))
            if reflected:
                acknowledged = paid + timedelta(seconds=self.rng.uniform(1, 59))
                yield Record("payments", beneficiary.encode(), cloudevent(
                    source="nic", event_type="payment.acknowledged", time_=acknowledged, data={
                        "payment_id": payment_id, "acknowledged_at": acknowledged.isoformat()}))
            charged_fee = 0
            if self.rng.random() < 0.5:
                charged_fee = fee
                charged = paid + timedelta(seconds=self.rng.uniform(1, 59))
                yield Record("payments", beneficiary.encode(), cloudevent(
                    source=agency.lower(), event_type="fee.charged", time_=charged, data={
                        "charge_id": f"CHG-{payment_id}", "beneficiary_id": beneficiary, "agency": agency,
                        "service_code": service, "amount": fee, "charged_at": charged.isoformat()}))
            if self.rng.random() < self.bank_refund_share and amount > charged_fee:
                yield from self._bank_refund(now, payment_id, beneficiary, payer_iban, agency, service,
                                             amount - charged_fee)
            if self.rng.random() < self.absher_share:
                yield from self._absher_refund(now, counter)
            if self.rng.random() < self.visa_share:
                yield from self._visa(now, counter)

    def _visa(self, now: datetime, counter: int) -> Iterator[Record]:
        """Journey B: a visa paid through SADAD, maybe cancelled, refunded to the paying account."""
        sponsor, iban = self._person()
        visa_type = self.rng.choices(VISA_TYPES, weights=(60, 20, 10, 10))[0]
        fee = 30000 if visa_type == "VISIT" else 200000
        cancelled = self.rng.random() < self.visa_cancel_share
        late = self.rng.random() < self.late_cancel_share
        gap = timedelta(hours=self.rng.uniform(72, 400) if late else self.rng.uniform(1, 71.9))
        # some cancellations happened days ago: their deadlines (and mismatches) are already due
        backdated = (timedelta(days=self.rng.uniform(5, 20)) if self.rng.random() < self.backdated_visa_share
                     else timedelta())
        requested = now - backdated - timedelta(minutes=self.rng.uniform(5, 120))
        issued = requested - gap if cancelled else now - timedelta(hours=self.rng.uniform(1, 48))
        if self.rng.random() < self.covid_visa_share:
            issued = datetime(2021, 1, 1, 9, tzinfo=timezone.utc) + timedelta(days=self.rng.uniform(0, 400))
        key = {"sponsor_id": sponsor, "export_number": f"{1440000000 + counter}", "serial_number": "1"}
        payment_id = f"SADAD-V-{self.seed or 0}-{counter:09d}"
        paid = issued - timedelta(hours=1)
        yield Record("payments", sponsor.encode(), cloudevent(
            source=f"bank/{iban[4:6]}", event_type="payment.recorded", time_=paid, data={
                "payment_id": payment_id, "beneficiary_id": sponsor, "payer_id": sponsor, "payer_iban": iban,
                "agency": "MUSANED", "service_code": "VISA_FEE", "amount": fee, "currency": "SAR",
                "channel": "MUSANED", "paid_at": paid.isoformat()}))
        yield Record("payments", sponsor.encode(), cloudevent(
            source="nic", event_type="payment.acknowledged", time_=paid + timedelta(seconds=30), data={
                "payment_id": payment_id, "acknowledged_at": (paid + timedelta(seconds=30)).isoformat()}))
        yield Record("visas", sponsor.encode(), cloudevent(
            source="musaned", event_type="visa.issued", time_=issued, data={
                **key, "visa_type": visa_type, "payment_id": payment_id, "fee": fee,
                "issued_at": issued.isoformat()}))
        if not cancelled:
            return
        requested = max(requested, issued + timedelta(minutes=1))
        accepted = min(now, requested + timedelta(seconds=self.rng.uniform(10, 90)))
        horizon = now - backdated  # a backdated journey's later steps happened days ago too
        yield Record("cancellations", sponsor.encode(), cloudevent(
            source="musaned", event_type="visa.cancellation_requested", time_=requested, data={
                **key, "requested_at": requested.isoformat(), "channel": self.rng.choice(("MUSANED", "ABSHER"))}))
        yield Record("cancellations", sponsor.encode(), cloudevent(
            source="musaned", event_type="visa.cancellation_accepted", time_=accepted, data={
                **key, "accepted_at": accepted.isoformat()}))
        if visa_type == "VISIT" or self.rng.random() < self.bank_silent_share:
            return
        restored = min(horizon, accepted + timedelta(seconds=self.rng.uniform(5, 60)))
        yield Record("visas", sponsor.encode(), cloudevent(
            source="nic", event_type="visa.status_changed", time_=restored, data={
                **key, "status": "FEES_RESTORED", "changed_at": restored.isoformat()}))
        if self.rng.random() < 0.2:
            return  # fees restored on paper, no money: a status mismatch once the deadline passes
        paid_back = min(horizon, restored + timedelta(seconds=self.rng.uniform(5, 60)))
        yield Record("bank-returns", sponsor.encode(), cloudevent(
            source=f"bank/{iban[4:6]}", event_type="refund.completed", time_=paid_back, data={
                "refund_id": visa_refund_id(sponsor, key["export_number"], key["serial_number"]),
                "bank_reference": f"{iban[4:6]}-{self.rng.randrange(10**9):09d}", "amount": fee, "iban": iban,
                "completed_at": paid_back.isoformat()}))

    def _requested_at(self, now: datetime) -> datetime:
        if self.rng.random() < self.backdated_share:
            return now - timedelta(days=self.rng.uniform(5, 20))
        return now - timedelta(seconds=self.rng.uniform(1, 30))

    def _bank_refund(self, now: datetime, payment_id: str, beneficiary: str, payer_iban: str, agency: str,
                     service: str, available: int) -> Iterator[Record]:
        """Journey A: the citizen asks the paying bank; the bank answers the order (usually)."""
        request_id = f"RR-{payment_id}"
        iban, amount = payer_iban, self.rng.randint(1, available // 100) * 100 if available >= 100 else available
        roll = self.rng.random()
        if roll < self.wrong_account_share:
            iban = saudi_iban(self.rng)
        elif roll < self.wrong_account_share + self.over_balance_share:
            amount = available + self.rng.randint(1, 10) * 100
        requested = self._requested_at(now)
        yield Record("refund-requests", beneficiary.encode(), cloudevent(
            source=f"bank/{iban[4:6]}", event_type="refund.requested", time_=requested, data={
                "request_id": request_id, "beneficiary_id": beneficiary, "agency": agency, "service_code": service,
                "amount": amount, "iban": iban, "channel": "BANK", "requested_at": requested.isoformat()}))
        if iban != payer_iban or amount > available or self.rng.random() < self.bank_silent_share:
            return
        # a backdated request was answered days ago (often late); a fresh one within minutes:
        # never a time in the future
        late = requested < now - timedelta(days=1)
        answered = min(now, requested + (timedelta(hours=self.rng.uniform(2, 90)) if late
                                         else timedelta(seconds=self.rng.uniform(5, 120))))
        bank_reference = f"{payer_iban[4:6]}-{self.rng.randrange(10**9):09d}"
        if self.rng.random() < self.bank_failure_share:
            yield Record("bank-returns", beneficiary.encode(), cloudevent(
                source=f"bank/{payer_iban[4:6]}", event_type="refund.failed", time_=answered, data={
                    "refund_id": request_id, "bank_reference": bank_reference,
                    "reason": self.rng.choice(("account closed", "account frozen", "name mismatch")),
                    "failed_at": answered.isoformat()}))
            return
        yield Record("bank-returns", beneficiary.encode(), cloudevent(
            source=f"bank/{payer_iban[4:6]}", event_type="refund.completed", time_=answered, data={
                "refund_id": request_id, "bank_reference": bank_reference, "amount": amount, "iban": iban,
                "completed_at": answered.isoformat()}))

    def _absher_refund(self, now: datetime, counter: int) -> Iterator[Record]:
        """Journey C: a pre-SADAD balance, refunded to any valid IBAN through the Jawazat queue."""
        beneficiary, iban = self._person()
        requested = self._requested_at(now)
        yield Record("refund-requests", beneficiary.encode(), cloudevent(
            source="absher", event_type="refund.requested", time_=requested, data={
                "request_id": f"AB-{self.seed or 0}-{counter:09d}", "beneficiary_id": beneficiary,
                "agency": "JAWAZAT", "service_code": self.rng.choice(("PASSPORT_ISSUE", "EXIT_REENTRY")),
                "amount": self.rng.choice((5000, 10000, 30000, 50000)), "iban": iban, "channel": "ABSHER",
                "requested_at": requested.isoformat()}))


def signed(records: Iterator[Record], keyring: Keyring) -> Iterator[Record]:
    """The records with every bank event signed by its bank's newest key (BANK_SIGNING_KEYS;
    under ``up``, the demo keys it generated). With no keys the records go out unsigned."""
    for record in records:
        if keyring and b'"refund.' in record.value:
            attributes = json.loads(record.value)
            if requires_signature(attributes["type"], attributes["data"]):
                yield Record(record.topic, record.key, sign_bytes(record.value, keyring))
                continue
        yield record


async def publish(settings: Settings, *, rate: float, duration: float | None = None, count: int | None = None,
                  seed: int | None = None, stop: threading.Event | None = None, progress=None) -> int:
    """Publish scenario traffic at ``rate`` events/s; return how many were sent."""
    await ensure_topics(settings)
    publisher = Publisher(settings)
    await publisher.start()
    sent = 0
    started = time.monotonic()
    batch: list[Record] = []

    async def flush() -> None:
        await publisher.publish(batch)
        if progress is not None:
            progress.update(len(batch))
        batch.clear()

    try:
        live = (lambda: datetime.now(timezone.utc)) if rate > 0 else None
        keyring = Keyring.parse(settings.bank_signing_keys)
        for record in signed(Scenario(seed=seed).events(clock=live), keyring):
            if stop is not None and stop.is_set():
                break
            if duration is not None and time.monotonic() - started >= duration:
                break
            if count is not None and sent >= count:
                break
            batch.append(record)
            sent += 1
            ahead = sent / rate - (time.monotonic() - started) if rate > 0 else 0.0
            if ahead > 0 or len(batch) >= 500:
                await flush()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        if batch:
            await flush()
    finally:
        await publisher.stop()
    return sent


def simulate_command(settings: Settings, *, rate: float, duration: float | None, count: int | None,
                     seed: int | None, progress: bool) -> int:
    settings.require("kafka_bootstrap_servers")
    if duration is None and count is None:
        raise ValueError("give --duration or --count")
    if not settings.bank_signing_keys:
        print("refund-ledger: no BANK_SIGNING_KEYS: bank events go out unsigned and will be rejected",
              file=sys.stderr)
    from tqdm import tqdm

    with tqdm(total=count, unit="event", disable=not progress) as bar:
        sent = asyncio.run(publish(settings, rate=rate, duration=duration, count=count, seed=seed,
                                   progress=bar))
    print(f"published {sent} events to {settings.kafka_bootstrap_servers}")
    return 0


def run_in_thread(settings: Settings, *, rate: float, stop: threading.Event) -> threading.Thread:
    """Demo traffic for ``up``, until ``stop`` is set."""
    thread = threading.Thread(target=lambda: asyncio.run(publish(settings, rate=rate, stop=stop)),
                              name="demo-traffic", daemon=True)
    thread.start()
    return thread
