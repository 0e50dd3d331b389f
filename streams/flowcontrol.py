"""Keeping fetched records when Faust resumes a flow that is already running.

Faust's flow control (`mode.utils.queues.FlowControlEvent`) empties every stream queue
whenever it is resumed, meant for the end of a rebalance, when the queues may still
hold records of partitions this worker no longer owns. But after a restart with state
to recover, Faust resumes the flow twice: once to read the changelog, and again at the
end of recovery, after it has resumed the input partitions and while it waits for the
committed offsets (half a second or more). Records fetched in between sit in the
queues and the second resume throws them away. They are never acknowledged, and the
consumer has already moved past them, so the worker skips them until its next restart,
and its committed offset stops at the first of them for good.

`FlowControl.resume` empties the queues only when the flow was actually suspended.
Every place where Faust suspends the flow for a rebalance empties the queues itself
as well, so records of revoked partitions are still dropped there; what a running flow
fetched is kept. (If the seek to the committed offsets moves a partition back, some
records are delivered twice; the worker is insensitive to that: events are
deduplicated by `event_id` and rows by ClickHouse.)
"""

from __future__ import annotations

import faust
from mode.utils.queues import FlowControlEvent


class FlowControl(FlowControlEvent):
    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


def install(app: faust.App) -> None:
    """Give `app` this flow control; before any stream or agent is declared."""
    app.flow_control = FlowControl(loop=app.loop)
