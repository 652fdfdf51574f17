"""The order a set-based batch runs its statements in (``projections._runs``): the same read model as
event by event, in far fewer round trips. Pure: no database."""

from services.audit.projections import Statement, _Prepared, _runs


def event(n: int, statements: list[str], *, person: str | None = None, payment: str | None = None,
          refund: str | None = None, visa: str | None = None) -> _Prepared:
    row = (f"ev-{n}", "ledger.x", "t", "s", None, None, None, None, person, payment, refund, visa, None, None, "{}")
    return _Prepared(None, "ledger.x", None, row, [Statement(sql, (n,)) for sql in statements])  # type: ignore[arg-type]


def order_of(runs) -> list[tuple[str, int]]:
    return [(sql, args[0]) for sql, many in runs for args in many]


def test_events_about_different_things_share_one_run_per_statement():
    batch = [event(n, ["INSERT payment", "COPY refund state"], person=f"P{n}", payment=f"PAY-{n}") for n in range(50)]

    runs = _runs(batch)

    assert [(sql, len(many)) for sql, many in runs] == [("INSERT payment", 50), ("COPY refund state", 50)]


def test_the_events_of_one_thing_keep_their_order_and_each_event_its_own():
    batch = [event(1, ["INSERT refund", "COPY refund state"], person="P1", refund="R1"),
             event(2, ["INSERT refund", "COPY refund state"], person="P2", refund="R2"),
             event(3, ["ORDER refund", "COPY refund state"], refund="R1"),
             event(4, ["COMPLETE refund", "COPY refund state"], refund="R1"),
             event(5, ["ORDER refund", "COPY refund state"], refund="R2")]

    order = order_of(_runs(batch))

    for n in range(1, 6):  # every statement once
        assert sorted(sql for sql, m in order if m == n) == sorted(batch[n - 1].statements[i].sql for i in range(2))
    r1 = [(sql, m) for sql, m in order if m in (1, 3, 4)]
    assert r1 == [("INSERT refund", 1), ("COPY refund state", 1), ("ORDER refund", 3), ("COPY refund state", 3),
                  ("COMPLETE refund", 4), ("COPY refund state", 4)], "one refund's events, in batch order"
    assert order.index(("ORDER refund", 5)) > order.index(("COPY refund state", 2))


def test_an_event_shares_no_wave_with_an_earlier_one_about_any_of_its_things():
    # the balance event names only the person; the payment names the person and the payment
    batch = [event(1, ["INSERT payment"], person="P1", payment="PAY-1"),
             event(2, ["MOVE balance"], person="P1"),
             event(3, ["ACK payment"], payment="PAY-1"),
             event(4, ["INSERT payment"], person="P9", payment="PAY-9")]

    order = order_of(_runs(batch))

    assert order.index(("INSERT payment", 1)) < order.index(("MOVE balance", 2))
    assert order.index(("INSERT payment", 1)) < order.index(("ACK payment", 3))
    assert order[:2] == [("INSERT payment", 1), ("INSERT payment", 4)], "PAY-9 joins the first wave"


def test_an_event_about_nothing_named_waits_for_all_before_it_and_all_after_wait_for_it():
    batch = [event(1, ["INSERT payment"], payment="PAY-1"),
             event(2, ["INSERT rejection"]),
             event(3, ["INSERT payment"], payment="PAY-3")]

    assert order_of(_runs(batch)) == [("INSERT payment", 1), ("INSERT rejection", 2), ("INSERT payment", 3)]


def test_events_without_statements_change_no_order():
    batch = [event(1, ["INSERT payment"], payment="PAY-1"),
             event(2, [], payment="PAY-1"),
             event(3, ["INSERT payment"], payment="PAY-3")]

    assert _runs(batch) == [("INSERT payment", [(1,), (3,)])]
    assert _runs([event(1, [])]) == []
