"""PCI pause over the control socket under a capture backlog: audio captured before the
agent resumed stays silent even when the loop processes it after the resume."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from recorder.compliance.control import ControlServer, send_request
from recorder.compliance.factory import build_core
from recorder.config import Config
from recorder.core.events import RecordingAudio, RecordingMarker
from recorder.core.pipeline import RecorderCore
from tests.compliance.helpers import MS, T_2023, make_call, payload, ulaw

TOKEN = "a-token-of-at-least-16-bytes"


def ask(server: ControlServer, core: RecorderCore, sock: Path, **request: str) -> Any:
    """Send one request from a desktop thread while this (loop) thread drains."""
    replies: list[Any] = []
    desk = threading.Thread(
        target=lambda: replies.append(send_request(sock, {"token": TOKEN, **request}))
    )
    desk.start()
    while desk.is_alive():
        server.drain(core)
        desk.join(0.01)
    return replies[0]


def test_resume_takes_effect_when_it_arrived_not_when_the_loop_caught_up(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    sock = tmp_path / "control.sock"
    # The desktop resumes at 700 ms (wall clock) while the loop is still at 400 ms.
    t_pause, t_resume = T_2023 + 1300 * MS, T_2023 + 1700 * MS
    server = ControlServer(sock, token, clock=lambda: t_resume)
    server.start()
    core = build_core(Config())
    events = []
    paused = resumed = None
    try:
        for frame in make_call(T_2023, 1, "+4420", "+4930222").sorted_frames():
            if frame.ts_ns >= t_pause and paused is None:
                paused = ask(server, core, sock, action="pause", call_id="call-1@test")
            if frame.ts_ns >= t_pause + 100 * MS and resumed is None:
                resumed = ask(server, core, sock, action="resume", call_id="call-1@test")
            core.receive_frame(frame)
            events += list(core.events())
    finally:
        server.stop()
    core.close()
    events += list(core.events())
    assert paused == resumed == {"ok": True, "calls": 1, "changed": 1}
    marks = [(e.kind, e.at_ns) for e in events if isinstance(e, RecordingMarker)]
    assert marks == [("paused", t_pause - 15 * MS), ("resumed", t_resume)]
    pcm = np.frombuffer(
        b"".join(e.pcm for e in events if isinstance(e, RecordingAudio)), "<i2"
    ).reshape(-1, 2)
    # Caller packet i is captured at 1000 + 20 i ms: 15..34 fall inside the window.
    assert not pcm[160 * 15 : 160 * 35, 0].any()
    np.testing.assert_array_equal(pcm[160 * 14 : 160 * 15, 0], ulaw(payload(14, 0, 1)))
    np.testing.assert_array_equal(pcm[160 * 35 : 160 * 36, 0], ulaw(payload(35, 0, 1)))
