"""Which generation the next proposal goes into, with and without the steady state (loop._open_generation)."""

from types import SimpleNamespace

from podisco.discovery.loop import _open_generation


def _state(*statuses_by_generation: tuple[int, str]) -> SimpleNamespace:
    """A run with population 2 and one refill per slot, whose attempts are (generation, status) pairs."""
    attempts = [SimpleNamespace(generation=g, status=s) for g, s in statuses_by_generation]
    search = SimpleNamespace(population=2, refills=1, generations=3)
    return SimpleNamespace(
        config=SimpleNamespace(search=search), archive=SimpleNamespace(attempts=lambda run: attempts), run_id="r"
    )


def test_the_papers_protocol_proposes_a_whole_generation_at_once_and_then_waits_for_it():
    assert _open_generation(_state(), steady=False) == 1
    # its second proposal goes out while the first runs: both run side by side
    assert _open_generation(_state((1, "proposed")), steady=False) == 1
    # full and running: the next generation waits for this one's outcomes
    assert _open_generation(_state((1, "proposed"), (1, "proposed")), steady=False) is None
    # a duplicate's slot is proposed again as soon as it is known, while the other still runs
    assert _open_generation(_state((1, "duplicate"), (1, "proposed")), steady=False) == 1
    # full and finished: the next generation
    assert _open_generation(_state((1, "evaluated"), (1, "duplicate"), (1, "invalid")), steady=False) == 2
    # the refills are used up (2 x population proposals): the generation ends with fewer than population
    done = _state((1, "duplicate"), (1, "duplicate"), (1, "duplicate"), (1, "evaluated"))
    assert _open_generation(done, steady=False) == 2


def test_the_steady_state_opens_the_next_generation_while_the_last_one_runs():
    assert _open_generation(_state((1, "proposed"), (1, "proposed")), steady=True) == 2
    assert _open_generation(_state((1, "proposed"), (1, "proposed"), (2, "evaluated")), steady=True) == 2
    full = [(g, "proposed") for g in (1, 1, 2, 2, 3, 3)]
    assert _open_generation(_state(*full), steady=True) is None  # every generation is full
