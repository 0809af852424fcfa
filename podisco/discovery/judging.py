"""The parent's half of an LLM-judged task: judge the answers a worker brought back (tasks/judged.py).

The worker trained and answered without network or key; here the judge scores each seed's answers. When the
judge cannot be reached (after the client's retries) the run stops with a clear error and nothing is lost:
the worker's result stays on disk and ``--resume`` judges it without training again (loop._submit).
"""

from __future__ import annotations

from podisco.discovery.config import DiscoveryConfig, RunState
from podisco.errors import PodiscoError


def make(config: DiscoveryConfig):
    from podisco.tasks.judge import make_judge

    return make_judge(config.judge_model or None, config.judge_base_url or None, config.judge_cache or None)


def judged_rows(state: RunState, rows: list[dict], what: str) -> list[dict]:
    """Each seed's row with the judge's ``score`` (its fitness before pairing), ``stderr`` and ``judged``."""
    from podisco.tasks.judged import score_answers

    out = []
    for row in rows:
        try:
            scores = score_answers(state.task_spec, row["answers"], state.judge, int(row["seed"]))
        except PodiscoError as error:  # LLMError (unreachable, refused) or not one usable verdict: the judge's
            raise PodiscoError(
                f"judging {what} (seed {row['seed']}) failed: {error}\n"
                f"the trained answers are kept; podisco discover --resume --run {state.run_id} judges them "
                "again without training"
            ) from error
        out.append({**row, **scores})
    return out
