"""Four eyes on Jawazat approvals, asserted on the events the refund case emits. No I/O.

Above the rules' amount (``four_eyes_above_halalas``) a first approval is recorded and the case
stays in the queue; the bank is ordered only after a second, different employee approves. The
maker can never be the checker.
"""

from datetime import timedelta

import pytest

from services.kit.rules import Rules, RulesError, load_rules
from services.refunds.domain import RefundCase, SameApprover
from tests.unit.test_refunds_domain import HELD_AT, new_case, open_case, origin

MAKER, CHECKER = "jawazat:e.alharbi", "jawazat:n.alqahtani"
LATER = HELD_AT + timedelta(hours=1)


def approve(case: RefundCase, by: str, *, four_eyes: bool, at=HELD_AT) -> list:
    case.approve(by=by, at=at, origin=origin("refund.approved", source="jawazat"), four_eyes=four_eyes)
    return case.collect_events()


def test_below_the_threshold_one_approval_orders_the_refund():
    case = new_case("JAWAZAT")
    events = approve(case, MAKER, four_eyes=False)
    assert [(type(e).__name__, e.decided_by) for e in events] == [("Ordered", MAKER)]
    assert case.state == "ORDERED"


def test_above_the_threshold_a_first_approval_is_recorded_and_the_case_stays_in_the_queue():
    case = new_case("JAWAZAT")
    [first] = approve(case, MAKER, four_eyes=True)
    assert isinstance(first, RefundCase.FirstApproved)
    assert (first.refund_id, first.approved_by, first.approved_at, first.queue, first.amount) == (
        "RR-1", MAKER, HELD_AT, "JAWAZAT_QUEUE", 10000)
    assert (case.state, case.first_approved_by) == ("JAWAZAT_QUEUE", MAKER)


def test_the_maker_can_never_be_the_checker():
    case = new_case("JAWAZAT")
    approve(case, MAKER, four_eyes=True)
    with pytest.raises(SameApprover, match="second, different employee") as refused:
        approve(case, MAKER, four_eyes=True, at=LATER)
    assert refused.value.reason_code == "four_eyes_same_approver"
    assert (case.state, case.collect_events()) == ("JAWAZAT_QUEUE", []), "nothing recorded, nothing ordered"


def test_a_second_different_approver_orders_the_refund_in_their_name():
    case = new_case("JAWAZAT")
    approve(case, MAKER, four_eyes=True)
    [ordered] = approve(case, CHECKER, four_eyes=True, at=LATER)
    assert isinstance(ordered, RefundCase.Ordered)
    assert (ordered.decided_by, ordered.ordered_at, case.state) == (CHECKER, LATER, "ORDERED")
    assert approve(case, MAKER, four_eyes=True, at=LATER) == [], "once ordered, a repeat changes nothing"


def test_a_case_rebuilt_from_its_events_remembers_the_first_approver():
    events = approve(open_case("JAWAZAT"), MAKER, four_eyes=True)  # Opened, FirstApproved
    rebuilt = None
    for stored in events:  # as the event store rebuilds the aggregate
        rebuilt = stored.mutate(rebuilt)
    with pytest.raises(SameApprover):
        rebuilt.approve(by=MAKER, at=LATER, origin=origin("refund.approved"), four_eyes=True)


def test_the_threshold_is_data_in_the_rules_file():
    rules = load_rules()
    assert rules.four_eyes_above == 500000
    assert (rules.needs_four_eyes(500000), rules.needs_four_eyes(500001)) == (False, True)


@pytest.mark.parametrize("value", [-1, "5000", 1.5, True])
def test_a_wrong_threshold_is_refused_when_the_rules_load(value):
    import dataclasses
    import json
    from importlib import resources

    raw = json.loads(resources.files("services.kit").joinpath("reference/rules.json").read_text(encoding="utf-8"))
    with pytest.raises(RulesError, match="four_eyes_above_halalas"):
        Rules.from_dict({**raw, "four_eyes_above_halalas": value})
    without = {k: v for k, v in raw.items() if k != "four_eyes_above_halalas"}
    assert dataclasses.replace(Rules.from_dict(without)).needs_four_eyes(10**9) is False
