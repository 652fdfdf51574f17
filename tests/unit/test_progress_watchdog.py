"""Liveness from progress: a worker with records waiting and no batch applied for
PROGRESS_STALL_AFTER seconds is stalled, unless a known outage is being retried."""

from services.kit.runtime import ProgressWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_records_waiting_without_progress_past_the_limit_is_a_stall():
    clock = Clock()
    watchdog = ProgressWatchdog(120, clock)
    clock.now = 120
    assert watchdog.stalled_for(waiting=5, excused=False) is None
    clock.now = 121
    assert watchdog.stalled_for(waiting=5, excused=False) == 121


def test_progress_or_nothing_to_do_resets_the_clock():
    clock = Clock()
    watchdog = ProgressWatchdog(120, clock)
    clock.now = 100
    watchdog.progressed()
    clock.now = 200
    assert watchdog.stalled_for(waiting=5, excused=False) is None
    clock.now = 300
    assert watchdog.stalled_for(waiting=0, excused=False) is None, "an idle worker is alive"
    clock.now = 421
    assert watchdog.stalled_for(waiting=1, excused=False) == 121


def test_an_outage_being_retried_is_not_a_stall():
    clock = Clock()
    watchdog = ProgressWatchdog(120, clock)
    clock.now = 500
    assert watchdog.stalled_for(waiting=50, excused=True) is None
    clock.now = 600
    assert watchdog.stalled_for(waiting=50, excused=False) is None, "counted from the end of the outage"
