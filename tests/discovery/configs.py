"""Building a nested DiscoveryConfig from flat keyword arguments, for tests and benchmarks."""

from dataclasses import fields
from pathlib import Path

from podisco.discovery.config import DiscoveryConfig
from podisco.tasks.base import TaskSpec, get_task, make_spec


def make_config(task: str = "imdb", **values) -> DiscoveryConfig:
    """``make_config(preset="tiny", generations=2, seeds=(0,))``: each key goes to the section that has it
    (``proposer`` is ``proposer.kind``); keys no section has are the task's options."""
    config = DiscoveryConfig()
    config.task.name = task
    if "proposer" in values:
        values["kind"] = values.pop("proposer")
    sections = [config.proposer, config.search, config.execution]
    for key, value in values.items():
        section = next((s for s in sections if key in {f.name for f in fields(s)}), None)
        if section is None:
            config.task.options[key] = value
        else:
            setattr(section, key, tuple(value) if isinstance(value, list) else value)
    return config


def job_spec(task: str = "digits", **options) -> TaskSpec:
    """A task's spec for a worker job: digits is prepared for real (it loads in a blink); the IMDb task gets a
    spec with no prepared cache, enough for jobs that run no seeds (the gate, the battery, the fingerprint)."""
    built = get_task(task, options)
    if task == "imdb":
        return make_spec(built, {"cache_dir": ""})
    return built.prepare(Path("."), lambda message: None)
