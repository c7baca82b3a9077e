"""The progress bar shows on a terminal only."""

from __future__ import annotations

import io

from meltguard.sim.progress import progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_of_the_total_steps_cleared_at_the_end() -> None:
    terminal = FakeTerminal()
    with progress_bar(40, terminal) as advance:
        assert advance is not None
        for _ in range(4):
            advance(10)
    shown = terminal.getvalue()
    assert "simulating" in shown
    assert "/40 [" in shown
    assert shown.endswith("\r")  # the bar is wiped so the table starts on a clean line


def test_a_pipe_or_file_gets_nothing() -> None:
    pipe = io.StringIO()
    with progress_bar(40, pipe) as advance:
        assert advance is None
    assert pipe.getvalue() == ""
