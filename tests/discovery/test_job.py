"""The parent -> worker contract: a frozen Job that survives JSON and refuses what it does not know."""

import json

import pytest

from podisco.discovery.boundary.job import Job
from podisco.tasks.base import TaskError, TaskSpec

SPEC = TaskSpec("imdb", "imdb", "3-tiny", {"preset": "tiny"}, {"cache_dir": "/tmp/x"})


def test_a_job_round_trips_through_json(tmp_path):
    job = Job(
        task=SPEC,
        name="cand",
        beta=0.05,
        seeds=(0, 1),
        code="def f(): ...",
        known={"attempt:1 dpo": [0.1, 0.2]},
        registry_measured=("sigmoid",),
        reference={"0": {"seed": 0, "reward": 0.4, "kl": 0.2}},
        stage1_seeds=1,
        stage_threshold=-0.01,
    )
    job.write(tmp_path / "job.json")
    assert Job.read(tmp_path / "job.json") == job
    assert not job.trusted and Job(task=SPEC, name="dpo", beta=0.05, seeds=(0,), loss="sigmoid").trusted


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("beta"), "job: missing key beta"),
        (lambda d: d.update(batch_size=8), "job: unknown key batch_size"),
        (lambda d: d["task"].pop("version"), "task spec: missing key version"),
        (lambda d: d["task"].update(dataset="cifar10"), "task spec: unknown key dataset"),
    ],
)
def test_a_missing_or_unknown_key_is_an_error_naming_it(tmp_path, change, message):
    data = Job(task=SPEC, name="cand", beta=0.05, seeds=(0,), code="def f(): ...").to_json()
    change(data)
    (tmp_path / "job.json").write_text(json.dumps(data))
    with pytest.raises(TaskError, match=message):
        Job.read(tmp_path / "job.json")


def test_a_job_runs_exactly_one_of_candidate_code_and_a_registered_loss():
    with pytest.raises(ValueError, match="exactly one"):
        Job(task=SPEC, name="x", beta=0.05, seeds=(0,))
    with pytest.raises(ValueError, match="exactly one"):
        Job(task=SPEC, name="x", beta=0.05, seeds=(0,), code="def f(): ...", loss="sigmoid")
