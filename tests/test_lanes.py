"""The two lanes: a bounded pool that says each piece of work's place, hands back what waits
when it stops, and runs work in the context (trace id, user) of whoever queued it."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from bot.lanes import AckGate, Lane, LaneFullError, Lanes

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def _blocker() -> tuple[threading.Event, threading.Event, object]:
    """(started, release, work): work that blocks until released."""
    started, release = threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait(10)

    return started, release, work


def test_places_are_told_when_queued_and_as_the_queue_moves() -> None:
    lane = Lane("long", workers=2, max_waiting=10)
    gates = [_blocker() for _ in range(2)]
    assert [lane.submit(work) for _, _, work in gates] == [0, 0]  # two slots: both start
    for started, _, _ in gates:
        assert started.wait(5)
    moves: dict[str, list[int]] = {"a": [], "b": []}
    later = {name: _blocker() for name in ("a", "b")}
    ahead = [lane.submit(later[n][2], moved=moves[n].append) for n in ("a", "b")]
    assert ahead == [1, 2]
    assert lane.running == 2 and lane.waiting == 2
    gates[0][1].set()  # a slot frees: "a" starts, "b" is next in line
    assert later["a"][0].wait(5)
    deadline = time.monotonic() + 5
    while moves["b"] != [1] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert moves["b"] == [1] and not later["b"][0].is_set()
    gates[1][1].set()
    assert later["b"][0].wait(5)
    for _, release, _ in later.values():
        release.set()
    lane.stop(time.monotonic() + 1)


def test_work_runs_in_the_context_of_whoever_queued_it() -> None:
    lane = Lane("quick", workers=2, max_waiting=10)
    seen: list[str] = []
    done = threading.Event()
    token = WHO.set("U1")
    try:
        lane.submit(lambda: (seen.append(WHO.get()), done.set()))
    finally:
        WHO.reset(token)
    assert done.wait(5) and seen == ["U1"]
    lane.stop(time.monotonic() + 1)


def test_a_full_lane_refuses_with_a_message_and_a_stopped_one_takes_nothing() -> None:
    lane = Lane("long", workers=1, max_waiting=2)
    started, release, work = _blocker()
    lane.submit(work)
    assert started.wait(5)
    lane.submit(lambda: None)
    lane.submit(lambda: None)
    with pytest.raises(LaneFullError, match="2 long commands are already waiting"):
        lane.submit(lambda: None)
    release.set()
    lane.stop(time.monotonic() + 2)
    with pytest.raises(LaneFullError, match="restarting"):
        lane.submit(lambda: None)


def test_stop_hands_back_what_waits_and_tells_what_it_interrupts() -> None:
    lanes = Lanes(long_jobs=1)
    told: list[tuple[str, str]] = []
    started, release, work = _blocker()
    lanes.long.submit(work, name="upload", abandon=lambda why: told.append(("upload", why)))
    assert started.wait(5)
    lanes.long.submit(lambda: None, name="frames", abandon=lambda why: told.append(("frames", why)))
    began = time.monotonic()
    quick, long = lanes.stop(time.monotonic() + 0.3)
    assert time.monotonic() - began < 2  # the deadline holds though the work does not end
    assert long.handed_back == ("frames",) and long.interrupted == ("upload",)
    assert quick.handed_back == () and quick.interrupted == ()
    assert told == [("frames", "not started"), ("upload", "interrupted")]
    release.set()


def test_work_that_finishes_before_the_deadline_is_not_interrupted() -> None:
    lane = Lane("long", workers=1, max_waiting=5)
    told: list[str] = []
    finished = threading.Event()

    def work() -> None:
        time.sleep(0.2)
        finished.set()

    lane.submit(work, abandon=told.append)
    stopped = lane.stop(time.monotonic() + 5)
    assert finished.is_set() and told == [] and stopped.interrupted == ()


def test_a_burst_onto_idle_threads_starts_every_item_it_was_told_starts() -> None:
    lane = Lane("quick", workers=4, max_waiting=10)
    warm = threading.Event()
    lane.submit(warm.set)  # one thread made, then idle
    assert warm.wait(5)
    deadline = time.monotonic() + 5
    while lane._idle != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    gates = [_blocker() for _ in range(3)]
    # Holding the lane's (re-entrant) lock, the idle thread cannot wake between the submits:
    # the burst a busy Slack channel sends.
    with lane._cond:
        assert [lane.submit(work) for _, _, work in gates] == [0, 0, 0]
    for started, _, _ in gates:
        assert started.wait(5)
    for _, release, _ in gates:
        release.set()
    lane.stop(time.monotonic() + 1)


def test_work_waits_for_a_lull_in_the_acks_but_not_for_ever() -> None:
    """Acks first (bot.lanes.AckGate): work queued during a burst of requests starts once no
    ack has been in progress for `quiet`, or after `longest` however busy the edge stays."""
    gate = AckGate(quiet=0.05, longest=0.6)
    lane = Lane("quick", workers=2, max_waiting=10, gate=gate)
    started = threading.Event()
    with gate.acking():
        lane.submit(started.set)
        assert not started.wait(0.2)  # an ack in progress holds the work back
    assert started.wait(1)
    held = gate.acking()
    held.__enter__()  # an edge that never goes quiet
    try:
        began = time.monotonic()
        again = threading.Event()
        lane.submit(again.set)
        assert again.wait(2) and 0.5 <= time.monotonic() - began < 1.5
    finally:
        held.__exit__(None, None, None)
    lane.stop(time.monotonic() + 1)
