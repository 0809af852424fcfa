import ast
import random

import pytest

from podisco.discovery.archive import Archive
from podisco.discovery.boundary.gate import check_code
from podisco.discovery.proposers import evolve, selection
from podisco.discovery.proposers.base import Context
from podisco.tasks.base import get_task
from podisco.tasks.seeds import CLASSIFICATION_SEEDS, PREFERENCE_SEEDS


@pytest.mark.parametrize("seed", range(5))
def test_every_operator_yields_code_that_passes_the_gate(seed):
    rng = random.Random(seed)
    codes = list(PREFERENCE_SEEDS.values())
    for code in codes:
        for op in (evolve.perturb, evolve.swap):
            out = op(code, rng, "child")
            if out is not None:
                assert check_code(out) == "child"
    a, b = rng.sample(codes, 2)
    assert check_code(evolve.gate(a, b, rng, "mix", classification=False)) == "mix"
    assert check_code(evolve.blend(a, b, rng, "mix", classification=False)) == "mix"
    x, y = rng.sample(list(CLASSIFICATION_SEEDS.values()), 2)
    assert check_code(evolve.blend(x, y, rng, "mix", classification=True)) == "mix"


def _numbers(tree: ast.AST) -> list[ast.Constant]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) in (int, float)]


def test_perturb_changes_one_constant_and_swap_one_primitive():
    rng = random.Random(0)
    renamed = PREFERENCE_SEEDS["slic"].replace("def slic", "def slic2")
    child = evolve.perturb(PREFERENCE_SEEDS["slic"], rng, "slic2")
    parent_tree, child_tree = ast.parse(renamed), ast.parse(child)
    changed = [(p, c) for p, c in zip(_numbers(parent_tree), _numbers(child_tree), strict=True) if p.value != c.value]
    assert len(changed) == 1  # one constant moved (slic's margin 1, here)...
    [(before, after)] = changed
    after.value = before.value
    assert ast.dump(child_tree) == ast.dump(parent_tree)  # ...and nothing else: name, structure, other numbers
    swapped = evolve.swap(PREFERENCE_SEEDS["dpo"], rng, "dpo2")
    assert "F.logsigmoid" not in swapped


def _archive_with_seeds(tmp_path):
    archive = Archive(tmp_path / "a.sqlite")
    archive.create_run("r", {}, "imdb", "2-tiny", "process")
    for slot, (name, code) in enumerate(PREFERENCE_SEEDS.items()):
        attempt = archive.add_proposed("r", 0, slot, "seed", name, "", code)
        archive.finish(attempt, "evaluated", fitness=slot / 10)
    return archive


def test_proposals_are_new_gate_clean_and_depend_only_on_the_slot(tmp_path):
    archive = _archive_with_seeds(tmp_path)
    proposer = evolve.EvolveProposer(seed=3)
    context = Context("r", get_task("imdb"), 1, 0, 4, archive)
    first, again = proposer.propose(context), proposer.propose(context)
    assert first.error is None and first.code == again.code  # a resumed run proposes the same
    assert check_code(first.code) == first.name and first.parents
    other = proposer.propose(Context("r", get_task("imdb"), 1, 1, 4, archive))
    assert other.code != first.code


def test_perturb_leaves_beta_rescalings_and_exponents_alone():
    ipo = PREFERENCE_SEEDS["ipo"]  # (logits - 1 / (2 * self.beta)) ** 2: every constant is β or an exponent
    assert {n.value for n in _numbers(ast.parse(ipo))} == {1, 2}
    assert all(evolve.perturb(ipo, random.Random(seed), "x") is None for seed in range(20))
    single = "def f(self, a, b, c, d):\n    return -F.logsigmoid(3 * self.beta * (a - b)) + 0.5 * (a - c)\n"
    moved = {evolve.perturb(single, random.Random(seed), "f") for seed in range(20)}
    assert all("3 * self.beta" in code for code in moved)  # 3 is β×3; only the 0.5 may move
    assert len(moved) > 1
    # β twice (a gate of two parents): scaling one product is not scaling β, so it may move
    twice = "def f(self, a, b, c, d):\n    return torch.sigmoid(self.beta * a / 0.3) * F.softplus(-self.beta * b)\n"
    assert {evolve.perturb(twice, random.Random(seed), "f") for seed in range(5)} != {None}


def test_parents_are_drawn_for_novelty_as_well_as_fitness(tmp_path):
    archive = Archive(tmp_path / "a.sqlite")
    archive.create_run("r", {}, "imdb", "4", "process")
    # four near-copies of the fittest behaviour, and one fit-enough entry that behaves unlike them
    prints = [[0.0, 0.0], [0.0, 0.01], [0.01, 0.0], [0.01, 0.01], [1.0, 1.0], [2.0, -2.0]]
    for slot, (fingerprint, fitness) in enumerate(zip(prints, (0.5, 0.49, 0.47, 0.46, 0.48, -1.0), strict=True)):
        attempt = archive.add_proposed("r", 0, slot, "seed", f"e{slot}", "", "")
        archive.finish(attempt, "evaluated", fitness=fitness, fingerprint=fingerprint)
    evaluated = archive.attempts("r", "evaluated")
    drawn = [selection.choose_parent(evaluated, random.Random(seed)).name for seed in range(400)]
    by_fitness = [selection.choose_parent(evaluated, random.Random(seed), 0.0).name for seed in range(400)]
    assert drawn.count("e4") > 2 * by_fitness.count("e4") and "e0" in drawn  # novelty and fitness both
    assert "e5" not in drawn  # novelty only among the fitter half: the worst, however novel, never
