from __future__ import annotations

import threading
import time

from podium.engine.events import EventBus, Message, QueuedSubscriber


def msg(i: int) -> Message:
    return Message(step=i, wall=0.0, level="info", text=str(i))


def test_a_failing_subscriber_is_removed_and_others_still_receive():
    bus = EventBus()
    got = []

    def broken(event):
        raise RuntimeError("viewer crashed")

    bus.subscribe(broken)
    bus.subscribe(got.append)
    bus.publish(msg(1))
    bus.publish(msg(2))
    assert [e.step for e in got] == [1, 2]


def test_unsubscribe():
    bus = EventBus()
    got = []
    off = bus.subscribe(got.append)
    bus.publish(msg(1))
    off()
    bus.publish(msg(2))
    assert [e.step for e in got] == [1]


def test_a_slow_subscriber_never_blocks_the_publisher_and_counts_drops():
    gate = threading.Event()
    seen = []

    def slow(event):
        gate.wait(10)
        seen.append(event.step)

    queued = QueuedSubscriber(slow, maxlen=5)
    bus = EventBus()
    bus.subscribe(queued)
    t0 = time.perf_counter()
    for i in range(100):
        bus.publish(msg(i))
    assert time.perf_counter() - t0 < 0.5  # the consumer is stuck; publishing is not
    gate.set()
    queued.close()
    assert queued.dropped >= 90
    assert seen[-5:] == [95, 96, 97, 98, 99]  # the newest events survive
