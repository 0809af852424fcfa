"""podisco.progress: the ETA, one rewritten line on a terminal, a few plain lines in a log."""

from __future__ import annotations

import io
import threading
import time

import pytest

from podisco.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(total=4, tty=False, **kwargs):
    stream, clock = io.StringIO(), Clock()
    defaults = {"unit": "jobs", "stream": stream, "tty": tty, "clock": clock, "tick": 0}
    return Progress("gen 2/5", total, **{**defaults, **kwargs}), stream, clock


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (44.6, "45s"), (80, "1m20s"), (3599, "59m59s"), (3600, "1h00m"), (7505, "2h05m"), (-1, "?")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert format_duration(float("nan")) == format_duration(float("inf")) == "?"


def test_eta_from_the_mean_pace_so_far():
    progress, _, clock = make()
    progress.start()
    assert progress.eta() is None and progress.line() == "gen 2/5: 0/4 jobs done, 0s elapsed"
    clock.now += 60
    progress.advance(3, note="dpo_v2: +0.0123")
    assert progress.eta() == pytest.approx(20.0)
    assert progress.line() == "gen 2/5: 3/4 jobs done, ETA 20s (dpo_v2: +0.0123)"
    clock.now += 20
    progress.advance()
    assert progress.line("done") == "gen 2/5: 4/4 jobs done in 1m20s (dpo_v2: +0.0123)"


def test_a_log_gets_a_start_line_a_line_per_interval_and_an_end_line():
    progress, stream, clock = make(total=1000, interval=30)
    with progress:
        for _ in range(1000):  # 125 s of work, a step every 1/8 s
            clock.now += 0.125
            progress.advance()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "gen 2/5 ..."
    assert lines[1] == "gen 2/5: 240/1000 jobs done, ETA 1m35s"
    assert lines[-1] == "gen 2/5: 1000/1000 jobs done in 2m05s"
    assert len(lines) == 2 + 4  # at 30, 60, 90 and 120 s: never a line per step
    assert "\r" not in stream.getvalue()


def test_a_step_of_unknown_length():
    progress, stream, clock = make(total=None, unit="", interval=30)
    with Progress("preparing the task", stream=stream, tty=False, clock=clock, tick=0):
        clock.now += 252
    assert stream.getvalue().splitlines() == ["preparing the task ...", "preparing the task: done in 4m12s"]
    assert progress.line() == "gen 2/5: 0s elapsed"


def test_a_terminal_gets_one_line_rewritten_in_place():
    progress, stream, clock = make(tty=True, refresh=0.2)
    with progress:
        for _ in range(4):
            clock.now += 10
            progress.advance(note="x")
            progress.set_note("a longer note than before")
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("gen 2/5: 4/4 jobs done in 40s (a longer note than before)\n")
    assert out.startswith("\rgen 2/5: 0/4 jobs done, 0s elapsed")
    assert "\rgen 2/5: 2/4 jobs done, ETA 20s (x)" in out


def test_terminal_redraws_are_throttled():
    progress, stream, clock = make(total=10_000, tty=True, refresh=0.2)
    with progress:
        for _ in range(10_000):  # 10 s in steps of 1 ms
            clock.now += 0.001
            progress.advance()
    assert 40 <= stream.getvalue().count("\r") <= 60  # about 5 a second, not 10 000


def test_a_shorter_line_blanks_what_the_longer_one_left():
    progress, stream, _ = make(tty=True, refresh=0)
    progress.start()
    progress.advance(note="a very long note indeed")
    progress.advance(note="short")
    last = stream.getvalue().split("\r")[-1]
    assert last.startswith("gen 2/5: 2/4 jobs done") and last.endswith("(short)" + " " * 18)


def test_a_message_prints_above_the_line():
    progress, stream, _ = make(tty=True, refresh=0)
    with progress:
        progress.advance()
        progress.write("attempt 7 evaluated: +0.0100")
        progress.advance()
    out = stream.getvalue()
    assert "attempt 7 evaluated: +0.0100\n\rgen 2/5: 1/4 jobs done" in out
    plain, log, _ = make()
    with plain:
        plain.write("attempt 7 evaluated")
    assert log.getvalue().splitlines()[1] == "attempt 7 evaluated"


def test_an_error_closes_the_line_as_stopped():
    progress, stream, clock = make()
    with pytest.raises(RuntimeError), progress:
        clock.now += 5
        progress.advance()
        raise RuntimeError("boom")
    assert stream.getvalue().splitlines()[-1] == "gen 2/5: 1/4 jobs stopped in 5s"
    progress.close()  # idempotent
    assert stream.getvalue().count("stopped") == 1


def test_interrupted():
    progress, stream, _ = make()
    with pytest.raises(KeyboardInterrupt), progress:
        raise KeyboardInterrupt
    assert stream.getvalue().splitlines()[-1] == "gen 2/5: 0/4 jobs interrupted in 0s"


def test_disabled_prints_nothing_but_still_counts():
    progress, stream, _ = make(enabled=False)
    with progress:
        progress.advance(4)
    assert stream.getvalue() == "" and progress.done == 4


def test_advance_starts_it_and_stderr_is_the_default(capsys):
    progress = Progress("re-evaluating the top 3", 3, unit="losses", tick=0)
    progress.advance()  # no `with`: the first advance starts it
    progress.close()
    err = capsys.readouterr().err.splitlines()  # not a terminal under pytest: plain lines
    assert err == ["re-evaluating the top 3 ...", "re-evaluating the top 3: 1/3 losses done in 0s"]


def test_threads_may_advance_it():
    progress, _, _ = make(total=800, tty=True, refresh=0)

    def worker():
        for _ in range(100):
            progress.advance()

    with progress:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert progress.done == 800


def test_the_ticker_keeps_the_clock_moving_between_steps():
    stream = io.StringIO()
    with Progress("preparing the task", stream=stream, tty=True, tick=0.02):
        time.sleep(0.3)
    assert stream.getvalue().count("\r") >= 3  # redrawn without an advance
    assert stream.getvalue().endswith("preparing the task: done in 0s\n")


def test_a_negative_total_is_refused():
    with pytest.raises(ValueError, match="total"):
        Progress("x", -1)
