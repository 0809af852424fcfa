"""CHILD ONLY: one job's training on several processes (``--gpus-per-job N``).

The sandboxed worker calls ``train_on_ranks``, which runs ``accelerate launch --num_processes N -m
podisco.discovery.child.ranks JOB.json CONFIG.yaml`` inside the same sandbox (the launched ranks are its
children: same limits, same namespaces, killed with it). Each rank loads the candidate from the job itself,
through the same vetted loader as the worker, and trains its share with the one training loop
(``run_training``: DDP, or FSDP / ZeRO-3 with ``accelerate_config``), which saves a full ``final/``; the
worker then evaluates that model in one process. The parent still only reads results and judges.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from podisco.discovery.boundary.job import Job

_TAIL = 3000  # characters of a failed launch's output kept in the error


class LaunchError(RuntimeError):
    """The ranks did not finish; the message carries the end of their output."""


def loopback_up() -> None:
    """Bring up ``lo`` in this network namespace: the ranks meet on 127.0.0.1, and ``unshare -n`` (the
    ``unshare`` isolation level) leaves it down (bwrap brings it up). Best effort: without the right to, the
    launch fails and says so."""
    import fcntl
    import struct

    get_flags, set_flags, up = 0x8913, 0x8914, 0x1  # SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP (linux/sockios.h)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            request = struct.pack("16sH", b"lo", 0)
            flags = struct.unpack("16sH", fcntl.ioctl(probe, get_flags, request))[1]
            if not flags & up:
                fcntl.ioctl(probe, set_flags, struct.pack("16sH", b"lo", flags | up))
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(processes: int, job_path: Path, config_path: Path, accelerate_config: str = "") -> list[str]:
    """``accelerate launch`` of this module on ``processes`` ranks of one machine (gloo on a CPU, NCCL on GPUs)."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:  # FSDP or DeepSpeed (recipes/accelerate/); the command line sets the process count
        command += ["--config_file", accelerate_config]
    else:
        command += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--num_processes", str(processes), "--num_machines", "1", "--main_process_port", str(_free_port())]
    return [*command, "-m", "podisco.discovery.child.ranks", str(job_path), str(config_path)]


def train_on_ranks(job: Job, job_path: Path, config, processes: int, accelerate_config: str = "") -> int:
    """Train ``config`` (a TrainConfig; ``output_dir`` is the seed's folder) on ``processes`` ranks; the number
    of optimizer steps taken. Raises LaunchError with the ranks' output when they fail."""
    from podisco.training.config import save_yaml

    loopback_up()
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    config_path = output / "launch.yaml"
    save_yaml(config, config_path)
    done = subprocess.run(
        launch_command(processes, job_path, config_path, accelerate_config),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": str(job.threads)},
    )
    trained = output / "trained.json"
    if done.returncode != 0 or not trained.exists():
        tail = (done.stdout + done.stderr)[-_TAIL:]
        raise LaunchError(f"training on {processes} processes failed (exit {done.returncode}):\n{tail}")
    return int(json.loads(trained.read_text())["steps"])


def main(argv: list[str]) -> int:
    import torch

    from podisco.discovery.child.candidate import preference_loss
    from podisco.training.config import TrainConfig, load_config
    from podisco.training.pipeline import train_from_config

    job = Job.read(argv[0])
    config = load_config(TrainConfig, argv[1])
    torch.set_num_threads(job.threads)
    loss_fn = preference_loss(job.code) if job.code else None  # the worker's battery already passed it
    result, _, _ = train_from_config(config, loss_fn, log=print)
    if int(os.environ.get("RANK", "0")) == 0:
        (Path(config.output_dir) / "trained.json").write_text(json.dumps({"steps": result.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
