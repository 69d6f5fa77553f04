"""The alarm deadline: interrupts sleeping and computing code, ignores late signals."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from recsys.serving import deadline


def _spin(seconds: float) -> int:
    end, turns = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        turns += 1
    return turns


@pytest.mark.parametrize("work", [lambda: time.sleep(1.0), lambda: _spin(1.0)])
def test_the_block_is_interrupted_at_its_deadline(work) -> None:
    assert deadline.available()
    start = time.perf_counter()
    with pytest.raises(deadline.DeadlineExceeded), deadline.deadline(0.03):
        work()
    assert time.perf_counter() - start < 0.5


def test_a_failure_handler_does_not_take_the_deadline_for_an_error() -> None:
    caught = []
    with pytest.raises(deadline.DeadlineExceeded), deadline.deadline(0.02):
        try:
            time.sleep(1.0)
        except Exception as exc:  # noqa: BLE001 - what a stage's degrade-don't-fail handler does
            caught.append(exc)
    assert caught == []


def test_a_finished_block_leaves_no_timer_behind() -> None:
    with deadline.deadline(0.05):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    time.sleep(0.1)  # nothing fires later


def test_no_time_left_raises_at_once() -> None:
    with pytest.raises(deadline.DeadlineExceeded), deadline.deadline(0.0):
        pytest.fail("the block must not run")


def test_only_the_main_thread_can_use_the_alarm() -> None:
    seen = []
    worker = threading.Thread(target=lambda: seen.append(deadline.available()))
    worker.start()
    worker.join()
    assert seen == [False]


def test_someone_elses_alarm_handler_is_left_alone() -> None:
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        assert not deadline.available()
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_a_deadline_inside_a_shielded_section_is_raised_when_it_ends() -> None:
    lock = threading.Lock()
    reached = []
    start = time.perf_counter()
    with pytest.raises(deadline.DeadlineExceeded), deadline.deadline(0.02):
        with deadline.shielded(), lock:
            _spin(0.1)  # past the deadline, lock held: not interrupted here
            reached.append(time.perf_counter() - start)
        pytest.fail("the deadline must be raised as the section ends")
    assert reached and reached[0] >= 0.1
    assert not lock.locked()


def test_a_shielded_section_outside_a_deadline_costs_nothing() -> None:
    with deadline.shielded():
        turns = _spin(0.01)
    assert turns > 0
    with deadline.deadline(0.5):
        with deadline.shielded():
            pass
        time.sleep(0.01)  # no deadline pending from the section
