"""``evolve``: an offline proposer that needs no LLM — mutation and crossover on the code of archive entries.

Operators (on the AST, so the result is always well-formed and passes the static gate, which is checked):

- ``perturb``: multiply one numeric constant by exp(N(0, 0.5)), skipping the constants whose change is only a
  different β (a factor of the one product that holds ``self.beta``, e.g. IPO's ``1 / (2 * self.beta)``: the
  tuned baseline makes those worthless) and exponents (``x ** 1.2`` of a negative margin is NaN);
- ``swap``: replace one elementwise primitive (logsigmoid, softplus, sigmoid, tanh, exp, relu, abs, square)
  by another;
- ``gate``: mix two parents with a sigmoid of the scaled margin, ``g = sigmoid(beta * rho / tau)``,
  ``loss = g * a + (1 - g) * b`` — the form DiscoPOP took (docs/paper.md, LRML);
- ``blend``: ``w * a + (1 - w) * b`` with a constant weight.

Parents are drawn by tournament on fitness, or for novelty in the fingerprint space (selection.choose_parent).
The random stream depends only on (seed, run, generation, slot), so a resumed run proposes what the unbroken
run would have.
"""

from __future__ import annotations

import ast
import hashlib
import math
import random
import textwrap

from podisco.discovery.archive import Attempt, code_hash
from podisco.discovery.boundary.gate import GateError, check_code
from podisco.discovery.proposers.base import Context, Proposal
from podisco.discovery.proposers.selection import choose_parent

PRIMITIVES = (
    ("F", "logsigmoid"),
    ("F", "softplus"),
    ("torch", "sigmoid"),
    ("torch", "tanh"),
    ("torch", "exp"),
    ("torch", "relu"),
    ("torch", "abs"),
    ("torch", "square"),
)
PREFERENCE_ARGS = "self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps"
_TRIES = 30


def _function(code: str) -> ast.FunctionDef:
    return next(n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef))


def _render(fn: ast.FunctionDef, name: str) -> str:
    fn.name = name
    return ast.unparse(ast.fix_missing_locations(fn)) + "\n"


def _is_beta(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "beta") or (
        isinstance(node, ast.Name) and node.id == "beta"
    )


def _factors(node: ast.AST) -> list[ast.AST]:
    """The factors of a product/quotient chain: ``1 / (2 * self.beta)`` -> [1, 2, self.beta]."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        return _factors(node.left) + _factors(node.right)
    return [node]


def fixed_constants(fn: ast.FunctionDef) -> set[int]:
    """ids of the constants ``perturb`` leaves alone: exponents, and when β occurs once, the constant factors
    of the product holding it (scaling one of them is the same as scaling β)."""
    fixed = {id(n.right) for n in ast.walk(fn) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)}
    if sum(1 for n in ast.walk(fn) if _is_beta(n)) == 1:
        for node in ast.walk(fn):
            factors = _factors(node)
            if len(factors) > 1 and any(_is_beta(f) for f in factors):
                fixed |= {id(f) for f in factors if isinstance(f, ast.Constant)}
    return fixed


def perturb(parent: str, rng: random.Random, name: str) -> str | None:
    fn = _function(parent)
    fixed = fixed_constants(fn)
    constants = [
        n
        for n in ast.walk(fn)
        if isinstance(n, ast.Constant)
        and type(n.value) in (int, float)
        and n.value not in (0, -1)
        and id(n) not in fixed
    ]
    if not constants:
        return None
    node = rng.choice(constants)
    value = float(node.value) * math.exp(rng.gauss(0.0, 0.5))
    node.value = float(f"{value:.3g}")
    return _render(fn, name)


def swap(parent: str, rng: random.Random, name: str) -> str | None:
    fn = _function(parent)
    calls = [
        n
        for n in ast.walk(fn)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
        and (n.func.value.id, n.func.attr) in PRIMITIVES
    ]
    if not calls:
        return None
    call = rng.choice(calls)
    current = (call.func.value.id, call.func.attr)
    module, attr = rng.choice([p for p in PRIMITIVES if p != current])
    call.func = ast.Attribute(value=ast.Name(id=module, ctx=ast.Load()), attr=attr, ctx=ast.Load())
    return _render(fn, name)


def _nested(code: str, name: str) -> str:
    return textwrap.indent(_render(_function(code), name), "    ")


def gate(a: str, b: str, rng: random.Random, name: str, classification: bool) -> str:
    if classification:
        return blend(a, b, rng, name, classification)
    tau = float(f"{math.exp(rng.uniform(math.log(0.1), math.log(2.0))):.3g}")
    return (
        f"def {name}({PREFERENCE_ARGS}):\n"
        + _nested(a, "parent_a")
        + _nested(b, "parent_b")
        + "    logits = policy_chosen_logps - policy_rejected_logps"
        + " - reference_chosen_logps + reference_rejected_logps\n"
        + f"    gate = torch.sigmoid(self.beta * logits / {tau})\n"
        + f"    return gate * parent_a({PREFERENCE_ARGS}) + (1 - gate) * parent_b({PREFERENCE_ARGS})\n"
    )


def blend(a: str, b: str, rng: random.Random, name: str, classification: bool) -> str:
    w = float(f"{rng.uniform(0.2, 0.8):.3g}")
    args = "logits, targets" if classification else PREFERENCE_ARGS
    call = args
    return (
        f"def {name}({args}):\n"
        + _nested(a, "parent_a")
        + _nested(b, "parent_b")
        + f"    return {w} * parent_a({call}) + {1 - w:.3g} * parent_b({call})\n"
    )


class EvolveProposer:
    kind = "evolve"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def propose(self, context: Context) -> Proposal:
        archive, run = context.archive, context.run_id
        evaluated = [a for a in archive.attempts(run, "evaluated") if a.fitness is not None]
        if not evaluated:
            return Proposal(error="evolve needs at least one evaluated archive entry (the seeds all failed)")
        key = f"{self.seed}/{run}/{context.generation}/{context.slot}"
        rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))
        seen = {a.code_hash for a in archive.attempts(run)}
        classification = context.task.kind == "classification"
        for _ in range(_TRIES):
            proposal = self._one(evaluated, rng, classification, context)
            if proposal is None or code_hash(proposal.code) in seen:
                continue
            try:
                check_code(proposal.code)
            except GateError:
                continue
            return proposal
        return Proposal(error=f"evolve found no new code in {_TRIES} tries")

    def feedback(self, context: Context, attempts) -> None:
        pass  # the archive is the only memory evolve needs

    def _one(
        self, evaluated: list[Attempt], rng: random.Random, classification: bool, context: Context
    ) -> Proposal | None:
        op = rng.choices(("perturb", "swap", "gate", "blend"), weights=(4, 3, 2, 1))[0]
        a = choose_parent(evaluated, rng)
        name = f"{op}_{context.generation}_{context.slot}"
        if op in ("perturb", "swap"):
            code = (perturb if op == "perturb" else swap)(a.code, rng, name)
            thought = f"{op} applied to {a.name} (fitness {a.fitness:.4f})"
            return None if code is None else Proposal(name=name, thought=thought, code=code, parents=[a.id])
        others = [e for e in evaluated if e.id != a.id]
        if not others:
            return None
        b = choose_parent(others, rng)
        code = (gate if op == "gate" else blend)(a.code, b.code, rng, name, classification)
        thought = f"{op} of {a.name} ({a.fitness:.4f}) and {b.name} ({b.fitness:.4f})"
        return Proposal(name=name, thought=thought, code=code, parents=[a.id, b.id])
