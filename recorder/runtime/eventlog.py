"""The live service's event log between the shared loop and the writer."""

from __future__ import annotations

import logging

from recorder.core.clock import SteppedClock
from recorder.core.events import (
    CallNotRecorded,
    Event,
    RecordingEnded,
    RecordingMarker,
    RecordingStarted,
)
from recorder.runtime.metrics import EventCounts
from recorder.runtime.writer import ArchiveWriter

log = logging.getLogger("recorder.service")


class EventLog:
    """Stands in for the writer in the loop: hands each event on (its times turned back
    into the wall clock, should the clock have been stepped), then logs the ones an
    operator wants to see, one line each (numbers and Call-IDs only at DEBUG), and counts
    what the metrics show by kind (recordings by content, pause/resume/stop markers)."""

    def __init__(
        self, writer: ArchiveWriter, counts: EventCounts, clock: SteppedClock | None = None
    ) -> None:
        self._writer = writer
        self._clock = clock or SteppedClock()
        self._starts: dict[int, int] = {}
        self.counts = counts

    def commit(self) -> None:
        """The writer's group commit, after each batch of events (see runner.feed_blocks)."""
        self._writer.commit()

    def handle(self, event: Event) -> None:
        event = self._clock.event(event)  # times in the wall clock of their segment
        opened = self._writer.stats.opened
        self._writer.handle(event)
        if isinstance(event, RecordingMarker):
            self.counts.markers[event.kind] += 1
            # The free-text part of a control request's reason only at DEBUG.
            log.info("recording %s (%s)", event.kind, event.detail.split(":", 1)[0])
            log.debug("recording %s of call %s: %s", event.kind, event.call_id, event.detail)
        elif isinstance(event, RecordingStarted):
            if self._writer.stats.opened != opened:
                self.counts.started[event.content] += 1
                self._starts[event.serial] = event.start_ns
                log.debug("recording call %s: %s -> %s", event.call_id, event.caller, event.callee)
        elif isinstance(event, RecordingEnded):
            start = self._starts.pop(event.serial, None)
            if start is not None:
                log.info(
                    "call recorded: %.1f s, %s, ended by %s",
                    (event.end_ns - start) / 1e9,
                    ",".join(event.codecs) or "no codec",
                    event.reason,
                )
        elif isinstance(event, CallNotRecorded):
            log.info("call not recorded: %s (%s)", event.outcome, event.reason)
            log.debug("not recorded call %s: %s -> %s", event.call_id, event.caller, event.callee)
