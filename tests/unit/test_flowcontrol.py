"""Resuming a running flow keeps what the stream queues hold; resuming a suspended one
empties them, as Faust expects after a rebalance."""

from __future__ import annotations

import faust
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from touchstream.streams.flowcontrol import FlowControl, install


def queued(flow: FlowControlEvent, *items: str) -> FlowControlQueue:
    queue: FlowControlQueue = FlowControlQueue(flow_control=flow, clear_on_resume=True)  # as Faust makes them
    for item in items:
        queue.put_nowait(item)
    return queue


def test_resuming_a_running_flow_keeps_the_queues() -> None:
    flow = FlowControl()
    flow.resume()  # the first resume, when recovery starts reading the changelog
    queue = queued(flow, "offset 16", "offset 17")
    flow.resume()  # the second, once recovery is complete
    assert queue.qsize() == 2


def test_resuming_after_a_suspend_still_empties_the_queues() -> None:
    flow = FlowControl()
    flow.resume()
    queue = queued(flow, "record of a revoked partition")
    flow.suspend()
    flow.resume()
    assert queue.qsize() == 0


def test_faust_own_flow_control_drops_them() -> None:
    """What this module exists for: without it, the second resume empties the queues."""
    flow = FlowControlEvent()
    flow.resume()
    queue = queued(flow, "offset 16")
    flow.resume()
    assert queue.qsize() == 0


def test_install_gives_the_app_streams_the_flow_control() -> None:
    app = faust.App("flowcontrol-test")
    install(app)
    assert type(app.flow_control) is FlowControl
    topic = app.topic("touchpoints", value_serializer="raw")
    assert topic.queue._flow_control is app.flow_control and topic.queue._clear_on_resume
