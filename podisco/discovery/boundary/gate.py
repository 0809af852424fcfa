"""The static gate: what candidate code may contain, decided from its AST alone (it is never run here).

A candidate is one function that computes a loss from tensors. It may use ``torch``, ``F``
(torch.nn.functional) and ``math`` — and of torch only a vetted set of tensor operations, because torch
itself can read and write files (``save``/``load``/``from_file``), load libraries (``ops.load_library``),
compile code (``utils.cpp_extension``, ``jit``, ``compile``) and reach the network (``hub``). ``torch.X``
must be in ``ALLOWED_TORCH``, ``F.X`` (or ``torch.nn.functional.X``) in ``ALLOWED_F``, ``math.X`` in
``ALLOWED_MATH``; deeper chains (``torch.special.erf``, ``torch.linalg.norm``) are refused, their common
functions are there as ``torch.X``. The only imports are ``import torch``, ``import torch.nn.functional as F``
(or ``from torch.nn import functional as F``) and ``import math``.

Names: free names must be parameters, locals, the three modules or ``ALLOWED_BUILTINS``; no name or attribute
may start with an underscore (which closes ``__class__.__subclasses__()``, ``__builtins__``, ``__globals__``
and friends), and there is no ``getattr``/``eval``/``exec``/``open``/``print`` (print is refused too: it
has no use in a loss, and output only fills logs). No name may be bound that shadows a Python builtin or one
of the three modules: the gate's view of scopes is flat, and a builtin bound only in a nested scope
(``[eval for eval in ()]``) would otherwise make ``eval(...)`` in the outer scope look local.

Attributes of values (tensors and other objects) are open except ``FORBIDDEN_TENSOR_METHODS`` (leaving
tensor maths: numpy, storage, hooks, autograd state, devices, files) and the interpreter's introspection
attributes (``gi_frame``, ``f_globals``, ``co_code``, ``tb_frame``, ``mro``, ``str.format``...): a generator
expression's ``gi_frame.f_globals`` would otherwise hand back the real ``torch`` module under another name.
Only ``self.beta`` is readable on ``self``, and no attribute may be assigned (no patching of torch or beta).

Statements: no global/nonlocal, class, with, try, del, match, async, yield/await, decorators, and no ``while``
loops: no loss needs one, and a ``while True:`` only holds a worker until the sandbox's deadline kills it (the
message says what to write instead; ``for`` over a ``range`` stays allowed). ``raise`` is allowed
(``ValueError`` is a vetted builtin). String literals are allowed and harmless: nothing can turn a string into a name.

The gate is the first line; the sandbox (a separate process with no network, a read-only filesystem and
resource limits) is the second, and ``candidate.load_function`` runs the code with only the vetted builtins.
Every rejection says what and where (``line N: ...``), for the proposer to fix.
"""

from __future__ import annotations

import ast
import builtins
import difflib

MAX_CODE_CHARS = 8000


class GateError(ValueError):
    """The code is not allowed; ``str(error)`` says why and on which line."""


ALLOWED_TORCH = frozenset(
    # elementwise maths
    "abs absolute acos acosh asin asinh atan atan2 atanh ceil clamp clamp_min clamp_max clip cos cosh deg2rad "
    "digamma erf erfc erfinv exp exp2 expm1 floor frac hypot lerp lgamma log log10 log1p log2 logaddexp "
    "logaddexp2 logit mul div add sub neg negative pow reciprocal remainder fmod round rsqrt sigmoid sign signbit "
    "sgn sin sinc sinh sqrt square tan tanh trunc xlogy relu softmax log_softmax nan_to_num heaviside "
    "maximum minimum fmax fmin true_divide multiply subtract divide "
    # reductions and ordering
    "amax amin argmax argmin cummax cummin cumprod cumsum logcumsumexp logsumexp max mean median min nanmean "
    "nansum norm prod quantile sort std std_mean sum topk var var_mean kthvalue argsort "
    # comparisons and tests
    "allclose eq equal ge greater gt isclose isfinite isinf isnan isneginf isposinf le less lt ne not_equal "
    "where logical_and logical_or logical_not logical_xor any all "
    # construction and shape
    "arange as_tensor cat concat diag diagonal empty_like flatten flip full full_like linspace ones ones_like "
    "outer rand_like randn_like reshape squeeze stack t tensor tile transpose tril triu unsqueeze zeros "
    "zeros_like broadcast_to gather index_select masked_fill matmul mm bmm einsum dot "
    # dtypes, constants, annotations
    "float16 float32 float64 bfloat16 half float double int32 int64 long bool finfo iinfo pi e inf nan "
    "Tensor FloatTensor LongTensor BoolTensor dtype Size".split()
)
ALLOWED_F = frozenset(
    "logsigmoid sigmoid softplus softsign relu relu6 leaky_relu elu selu celu gelu silu mish tanh tanhshrink "
    "hardtanh hardsigmoid hardswish softmax log_softmax softmin normalize one_hot cross_entropy nll_loss "
    "mse_loss l1_loss smooth_l1_loss huber_loss binary_cross_entropy binary_cross_entropy_with_logits kl_div "
    "margin_ranking_loss soft_margin_loss hinge_embedding_loss poisson_nll_loss gaussian_nll_loss "
    "cosine_similarity pad dropout threshold".split()
)
ALLOWED_MATH = frozenset(
    "pi e tau inf nan exp expm1 log log1p log2 log10 sqrt pow tanh sinh cosh sin cos tan atan atan2 asin acos "
    "erf erfc gamma lgamma floor ceil fabs copysign isfinite isinf isnan isclose hypot fsum prod".split()
)
ALLOWED_BUILTINS = frozenset(
    "abs all any bool dict divmod enumerate filter float int isinstance len list map max min pow range "
    "reversed round sorted sum tuple zip ValueError True False None".split()
)
# Attributes refused on any value: what leaves tensor maths (memory, devices, hooks, autograd state, files,
# in-place storage tricks), the names of torch's file and code-loading entry points wherever they turn up,
# and interpreter introspection that leads back to modules (class hierarchies, str.format's field lookup).
FORBIDDEN_TENSOR_METHODS = frozenset(
    "numpy tofile storage untyped_storage storage_type data_ptr const_data_ptr mutable_data_ptr share_memory_ "
    "register_hook register_post_accumulate_grad_hook backward apply_ map_ map2_ set_ resize_ resize_as_ "
    "pin_memory cuda cpu requires_grad_ detach_ retain_grad grad data grad_fn new_tensor new_empty is_shared "
    "record_stream copy_ fill_ zero_ as_strided as_strided_ type "
    "save load from_file from_buffer load_library hub utils ops jit compile library "
    "mro format format_map cell_contents with_traceback".split()
)
# Frames, code objects, tracebacks, generator/coroutine internals: gi_frame.f_globals is a module's namespace.
_INTROSPECTION_PREFIXES = ("gi_", "cr_", "ag_", "f_", "co_", "tb_", "func_", "im_")
ALLOWED_IMPORTS = {("torch", None), ("torch.nn.functional", "F"), ("math", None)}
_MODULES = {"torch": ALLOWED_TORCH, "F": ALLOWED_F, "math": ALLOWED_MATH}
_PYTHON_BUILTINS = frozenset(dir(builtins))
_FORBIDDEN_NODES = {
    ast.Global: "global statements",
    ast.Nonlocal: "nonlocal statements",
    ast.ClassDef: "class definitions",
    ast.With: "with blocks",
    ast.AsyncWith: "with blocks",
    ast.AsyncFunctionDef: "async functions",
    ast.AsyncFor: "async loops",
    ast.Await: "await",
    ast.Yield: "generators (yield)",
    ast.YieldFrom: "generators (yield from)",
    ast.Delete: "del statements",
    ast.Try: "try blocks",
    ast.TryStar: "try blocks",
    ast.Match: "match statements",
    ast.While: "while loops",
}
# What to write instead, where a refusal alone would leave the proposer guessing
_INSTEAD = {
    ast.While: (
        "no loss needs one, and one that never ends only holds a worker until its deadline: write the loss with "
        "tensor operations, or loop with `for i in range(N)` and a small fixed N"
    ),
}


def _forbidden(node: ast.AST) -> GateError:
    instead = _INSTEAD.get(type(node))
    return _reject(node, f"{_FORBIDDEN_NODES[type(node)]} are not allowed" + (f": {instead}" if instead else ""))


_IMPORT_HINT = "only `import torch`, `import torch.nn.functional as F` and `import math` are allowed"


def _allowed_hint(root: str, wanted: str) -> str:
    """What *is* allowed instead, so the proposer can fix its code: close names first, then the vetted list."""
    vetted = sorted(_MODULES[root])
    close = difflib.get_close_matches(wanted, vetted, n=3, cutoff=0.75)
    guess = f"Did you mean {', '.join(f'{root}.{c}' for c in close)}? " if close else ""
    return f"{guess}Only {root}.NAME with one of these NAMEs may be used: {' '.join(vetted)}."


def _reject(node: ast.AST | None, message: str) -> GateError:
    line = getattr(node, "lineno", None)
    return GateError(f"line {line}: {message}" if line else message)


def _check_import(node: ast.Import | ast.ImportFrom) -> None:
    if isinstance(node, ast.ImportFrom):
        names = [(f"{node.module}.{a.name}" if node.module else a.name, a.asname) for a in node.names]
        if node.level or node.module != "torch.nn" or names != [("torch.nn.functional", "F")]:
            module = "." * node.level + (node.module or "")
            raise _reject(node, f"`from {module} import ...` is not allowed; {_IMPORT_HINT}")
        return
    for alias in node.names:
        if (alias.name, alias.asname) not in ALLOWED_IMPORTS:
            raise _reject(
                node,
                f"import of {alias.name!r}{f' as {alias.asname}' if alias.asname else ''} is not allowed; "
                + _IMPORT_HINT,
            )


def _attribute_chain(node: ast.Attribute) -> list[str] | None:
    """``torch.nn.functional.relu`` -> ["torch", "nn", "functional", "relu"]; None if not rooted at a name."""
    parts = []
    current: ast.AST = node
    while isinstance(current, ast.Attribute):
        parts.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return None
    return [current.id, *reversed(parts)]


def _check_attribute(node: ast.Attribute, local_names: set[str]) -> bool:
    """True when the whole chain was vetted (its inner nodes need no further check)."""
    attr = node.attr
    if attr.startswith("_"):
        raise _reject(node, f"attribute {attr!r}: names starting with an underscore are not allowed")
    chain = _attribute_chain(node)
    if chain and chain[0] == "self":
        if chain[1:] != ["beta"]:
            raise _reject(node, f"self.{'.'.join(chain[1:])} is not available; only self.beta is")
        if "self" not in local_names:
            raise _reject(node, "self.beta needs the method form: make `self` the first parameter")
        return True
    if chain and chain[0] in _MODULES:
        root, rest = chain[0], chain[1:]
        if root == "torch" and rest[:2] == ["nn", "functional"] and len(rest) == 3:
            root, rest = "F", rest[2:]
        if len(rest) != 1 or rest[0] not in _MODULES[root]:
            raise _reject(node, f"{'.'.join(chain)} is not allowed. {_allowed_hint(root, rest[-1] if rest else '')}")
        return True
    # A method or attribute of a value (a tensor): everything but what leaves tensor maths.
    if attr in FORBIDDEN_TENSOR_METHODS:
        raise _reject(node, f".{attr} is not allowed on tensors or other values; use tensor operations only")
    if attr.startswith(_INTROSPECTION_PREFIXES):
        raise _reject(node, f".{attr} reaches interpreter internals (frames, code, tracebacks) and is not allowed")
    return False


def _binding(node: ast.AST) -> str | None:
    """The name ``node`` binds in its scope, if any (imports are vetted on their own)."""
    if isinstance(node, ast.arg):
        return node.arg
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        return node.id
    if isinstance(node, ast.FunctionDef):
        return node.name
    return None


def _bound_names(fn: ast.FunctionDef) -> set[str]:
    """Parameters, assigned names, loop and comprehension targets, nested function names, import aliases."""
    names = {alias.asname or alias.name.split(".")[0] for alias in ast.walk(fn) if isinstance(alias, ast.alias)}
    return names | {name for node in ast.walk(fn) if (name := _binding(node)) is not None}


def _check_binding(node: ast.AST, name: str) -> None:
    """Refuse binding a module or builtin name anywhere: the scopes here are flat (see the module docstring)."""
    if name.startswith("_"):
        raise _reject(node, f"name {name!r}: names starting with an underscore are not allowed")
    if name in _MODULES or name in ALLOWED_BUILTINS:
        raise _reject(node, f"assigning to {name!r} is not allowed")
    if name in _PYTHON_BUILTINS:
        raise _reject(node, f"{name!r} is the name of a Python builtin; choose another name")


def _in_source_order(fn: ast.FunctionDef) -> list[ast.AST]:
    """Every node, the first offence in reading order first (the outer node first where two start together)."""
    return sorted(ast.walk(fn), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))


def check_code(code: str, max_chars: int = MAX_CODE_CHARS) -> str:
    """The name of the single top-level function in ``code``, or ``GateError`` with the reason."""
    if len(code) > max_chars:
        raise GateError(f"the code is {len(code)} characters; the limit is {max_chars}")
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        raise GateError(f"line {error.lineno}: syntax error: {error.msg}") from error
    functions = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions.append(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            _check_import(node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        elif type(node) in _FORBIDDEN_NODES:
            raise _forbidden(node)
        else:
            raise _reject(node, "only imports and one function definition may appear at the top level")
    if len(functions) != 1:
        found = ", ".join(f.name for f in functions) or "none"
        raise GateError(f"the code must define exactly one top-level function; found {len(functions)} ({found})")
    fn = functions[0]
    for node in ast.walk(fn):  # before the rest: a decorator's own expression would be reported instead
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            raise _reject(node.decorator_list[0], "decorators are not allowed")
    local_names = _bound_names(fn)
    vetted: set[int] = set()
    for node in _in_source_order(fn):
        if id(node) in vetted:
            continue
        if (name := _binding(node)) is not None:
            _check_binding(node, name)
        kind = type(node)
        if kind in _FORBIDDEN_NODES:
            raise _forbidden(node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            _check_import(node)
        elif isinstance(node, ast.Attribute):
            if isinstance(node.ctx, (ast.Store, ast.Del)):  # no patching of torch, F, math or self
                raise _reject(node, f"assigning to an attribute ({node.attr!r}) is not allowed")
            if _check_attribute(node, local_names):
                vetted.update(id(n) for n in ast.walk(node))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            _check_name(node, local_names)
    return fn.name


def _check_name(node: ast.Name, local_names: set[str]) -> None:
    name = node.id
    if name.startswith("_"):
        raise _reject(node, f"name {name!r}: names starting with an underscore are not allowed")
    if name in _MODULES:
        raise _reject(node, f"{name} may only be used as {name}.<operation>")
    if name in local_names or name in ALLOWED_BUILTINS:
        return
    raise _reject(node, f"unknown name {name!r}: only parameters, local variables, torch, F, math and basic builtins")
