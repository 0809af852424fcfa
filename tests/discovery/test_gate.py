"""The static gate: what it accepts, and for each rule a rejected example with the reason and the line."""

import pytest

from podisco.discovery.boundary.gate import (
    ALLOWED_BUILTINS,
    ALLOWED_F,
    ALLOWED_MATH,
    ALLOWED_TORCH,
    FORBIDDEN_TENSOR_METHODS,
    MAX_CODE_CHARS,
    GateError,
    check_code,
)
from podisco.tasks.seeds import CLASSIFICATION_SEEDS, PREFERENCE_SEEDS

HEAD = "def f(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):\n"
DPO = PREFERENCE_SEEDS["dpo"]


def body(*lines: str) -> str:
    """The paper-form method with ``lines`` as its body: the first body line is line 2."""
    return HEAD + "".join(f"    {line}\n" for line in lines)


DPO_ANNOTATED = '''def my_loss(self, policy_chosen_logps: torch.FloatTensor, policy_rejected_logps: torch.FloatTensor,
            reference_chosen_logps: torch.FloatTensor,
            reference_rejected_logps: torch.FloatTensor) -> torch.FloatTensor:
    """DPO, as the paper's prompt writes it."""
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    logits = pi_logratios - ref_logratios
    return -F.logsigmoid(self.beta * logits)
'''

ACCEPTED = {
    "dpo_annotated": (DPO_ANNOTATED, "my_loss"),
    "classification": ('def f(logits, targets):\n    return F.cross_entropy(logits, targets, reduction="none")\n', "f"),
    "imports": ("import torch\nimport torch.nn.functional as F\nimport math\n\n" + DPO, "dpo"),
    "from_import_and_docstring": ('"""A docstring."""\nfrom torch.nn import functional as F\n' + DPO, "dpo"),
    "imports_inside": (body("import math", "import torch.nn.functional as F", "return F.softplus(-math.e)"), "f"),
    "nested_helper": (
        body(
            "def helper(x, scale=2.0):",
            "    return torch.where(x > 0, F.softplus(-x), math.pi * x ** 2) * scale",
            "logits = policy_chosen_logps - policy_rejected_logps",
            "return helper(self.beta * logits, scale=math.tau)",
        ),
        "f",
    ),
    "comprehension_lambda_loop": (
        body(
            "logits = policy_chosen_logps - policy_rejected_logps",
            "scale = [self.beta * k for k in range(3)]",
            "total = sum(w * torch.sigmoid(logits) for w in scale)",
            "square = lambda v: v * v",
            "for k in range(2):",
            "    pass",
            "out = square(total).clamp(min=0).float().to(torch.float32)",
            "return torch.nn.functional.logsigmoid(out) + 0 * logits.mean().item()",
        ),
        "f",
    ),
    "raise_with_fstring": (
        body(
            "if policy_chosen_logps.dim() != 1:",
            "    raise ValueError(f'expected (B,), got {tuple(policy_chosen_logps.shape)} in {\"f\"}')",
            "eps = torch.finfo(policy_chosen_logps.dtype).eps",
            "return torch.log1p(torch.exp(-self.beta * policy_chosen_logps)) + eps + math.inf * 0",
        ),
        "f",
    ),
    **{f"seed_{name}": (code, name) for name, code in {**PREFERENCE_SEEDS, **CLASSIFICATION_SEEDS}.items()},
}


@pytest.mark.parametrize(("code", "name"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted(code, name):
    assert check_code(code) == name


# (id, code, what the reason must contain). The id names the rule; the reason carries the line where there is one.
REJECTED = [
    # size, syntax, shape of the module
    ("too_long", DPO + "#" * MAX_CODE_CHARS, f"the limit is {MAX_CODE_CHARS}"),
    ("syntax_error", "def f(x:\n    return x\n", "line 1: syntax error"),
    ("two_functions", DPO + "\n" + PREFERENCE_SEEDS["ipo"], "exactly one top-level function; found 2 (dpo, ipo)"),
    ("no_function", "import torch\n", "found 0"),
    ("top_level_statement", "x = 1\n" + DPO, "line 1: only imports and one function"),
    ("top_level_class", DPO + "class A:\n    pass\n", "line 6: class definitions are not allowed"),
    # imports
    ("import_os", "import os\n" + DPO, "line 1: import of 'os' is not allowed"),
    ("import_subprocess", "import subprocess\n" + DPO, "line 1: import of 'subprocess'"),
    ("import_ctypes", "import ctypes\n" + DPO, "line 1: import of 'ctypes'"),
    ("import_torch_utils", "import torch.utils\n" + DPO, "line 1: import of 'torch.utils'"),
    ("import_torch_utils_data", "import torch.utils.data\n" + DPO, "line 1: import of 'torch.utils.data'"),
    ("from_torch_import_hub", "from torch import hub\n" + DPO, "line 1: `from torch import ...` is not allowed"),
    ("relative_import", "from . import x\n" + DPO, "line 1: `from . import ...` is not allowed"),
    ("functional_without_alias", "from torch.nn import functional\n" + DPO, "`from torch.nn import ...`"),
    ("star_import", "from os import *\n" + DPO, "line 1: `from os import ...`"),
    ("import_torch_as", "import torch as t\n" + DPO, "line 1: import of 'torch' as t"),
    ("import_math_as", "import math as m\n" + DPO, "import of 'math' as m"),
    ("import_inside", body("import os", "return policy_chosen_logps"), "line 2: import of 'os'"),
    # underscores: dunder escapes
    ("dunder_import", body("return __import__('os').system('x')"), "line 2: name '__import__': names starting"),
    ("subclasses", body("return ().__class__.__bases__[0].__subclasses__()"), "line 2: attribute '__subclasses__'"),
    ("self_dict", body("return self.__dict__"), "line 2: attribute '__dict__'"),
    ("lambda_builtins", body("g = lambda: __builtins__", "return g"), "line 2: name '__builtins__'"),
    ("func_globals", body("return F.logsigmoid.__globals__"), "line 2: attribute '__globals__'"),
    ("underscore_local", body("_x = 1", "return _x"), "line 2: name '_x': names starting with an underscore"),
    ("underscore_param", body("def g(_x):", "    return 0", "return g(1)"), "line 2: name '_x'"),
    # builtins and unknown names
    ("getattr", body("return getattr(torch, 'sa' + 've')"), "line 2: unknown name 'getattr'"),
    ("open", body("return open('/etc/passwd').read()"), "line 2: unknown name 'open'"),
    ("eval", body("return eval('1')"), "line 2: unknown name 'eval'"),
    ("exec", body("logits = 1", "exec('x = 1')", "return logits"), "line 3: unknown name 'exec'"),
    ("compile", body("return compile('1', 'f', 'eval')"), "line 2: unknown name 'compile'"),
    ("globals", body("return globals()"), "line 2: unknown name 'globals'"),
    ("vars", body("return vars(torch)"), "line 2: unknown name 'vars'"),
    ("type", body("return type(policy_chosen_logps)"), "line 2: unknown name 'type'"),
    ("print", body("print(policy_chosen_logps)", "return 0"), "line 2: unknown name 'print'"),
    ("unknown_os", body("return os.system('ls')"), "line 2: unknown name 'os'"),
    # shadowing: a builtin bound in a nested scope must not make the outer use look local
    ("shadow_comprehension", body("y = [eval for eval in ()]", "return eval('1')"), "line 2: 'eval' is the name"),
    ("shadow_parameter", body("def g(open):", "    return 0", "return open('x')"), "line 2: 'open' is the name"),
    ("shadow_function", body("def getattr():", "    return 0", "return 0"), "line 2: 'getattr' is the name"),
    ("assign_module", body("torch = 1", "return torch"), "line 2: assigning to 'torch'"),
    ("assign_builtin", body("max = 1", "return max"), "line 2: assigning to 'max'"),
    ("alias_module", body("t = torch", "return t.save"), "line 2: torch may only be used as torch.<operation>"),
    # torch, F and math: only vetted operations
    ("torch_save", body("logits = 1", "torch.save(logits, '/tmp/x')", "return logits"), "line 3: torch.save is"),
    ("while_loop", body("while True:", "    pass"), "line 2: while loops are not allowed: no loss needs one"),
    ("torch_load", body("return torch.load('/etc/passwd')"), "line 2: torch.load is not allowed. Only torch.NAME"),
    ("torch_from_file", body("return torch.from_file('/etc/passwd')"), "line 2: torch.from_file is not allowed"),
    ("torch_hub", body("return torch.hub.load('a', 'b')"), "line 2: torch.hub.load is not allowed"),
    ("cpp_extension", body("return torch.utils.cpp_extension.load_inline('a', 'b')"), "torch.utils.cpp_extension"),
    ("load_library", body("torch.ops.load_library('x.so')", "return 0"), "line 2: torch.ops.load_library is not"),
    ("torch_jit", body("return torch.jit.script(F.logsigmoid)"), "line 2: torch.jit.script is not allowed"),
    ("torch_compile", body("return torch.compile(F.logsigmoid)"), "line 2: torch.compile is not allowed"),
    ("set_threads", body("torch.set_num_threads(64)", "return 0"), "line 2: torch.set_num_threads is not"),
    ("manual_seed", body("torch.manual_seed(0)", "return 0"), "line 2: torch.manual_seed is not allowed"),
    ("torch_cuda", body("return torch.cuda.is_available()"), "line 2: torch.cuda.is_available is not"),
    ("torch_special", body("return torch.special.erf(policy_chosen_logps)"), "torch.special.erf is not"),
    ("torch_nn_module", body("return torch.nn.Linear(2, 2)"), "line 2: torch.nn.Linear is not allowed"),
    ("f_unvetted", body("return F.conv1d(policy_chosen_logps, policy_chosen_logps)"), "line 2: F.conv1d is not"),
    ("functional_chain", body("return torch.nn.functional.unfold(policy_chosen_logps)"), "functional.unfold is"),
    ("math_unvetted", body("return math.factorial(10 ** 9)"), "line 2: math.factorial is not allowed"),
    # values: methods that leave tensor maths, and interpreter introspection
    ("numpy", body("return policy_chosen_logps.numpy()"), "line 2: .numpy is not allowed"),
    ("data", body("return policy_chosen_logps.data"), "line 2: .data is not allowed"),
    ("register_hook", body("policy_chosen_logps.register_hook(abs)", "return 0"), "line 2: .register_hook is"),
    ("storage", body("return policy_chosen_logps.untyped_storage()"), "line 2: .untyped_storage is not allowed"),
    ("storage_from_file", body("return policy_chosen_logps.storage_type().from_file('/etc/passwd')"), ".from_file"),
    ("gi_frame", body("return (i for i in ()).gi_frame"), "line 2: .gi_frame reaches interpreter internals"),
    (
        "frame_globals",
        body("g = (i for i in ())", "t = g.gi_frame.f_globals['torch']", "return t.save"),
        "line 3: .f_globals reaches interpreter internals",
    ),
    ("mro", body("T = torch.Tensor", "return T.mro()"), "line 3: .mro is not allowed"),
    ("str_format", body("return '{0.gi_frame}'.format(policy_chosen_logps)"), "line 2: .format is not allowed"),
    # self
    ("self_other", body("return self.other"), "line 2: self.other is not available; only self.beta is"),
    ("self_without_method_form", "def f(logits, targets):\n    return self.beta * logits\n", "line 2: self.beta needs"),
    ("assign_beta", body("self.beta = 10", "return 0"), "line 2: assigning to an attribute ('beta')"),
    ("patch_torch", body("torch.exp = torch.sigmoid", "return 0"), "line 2: assigning to an attribute ('exp')"),
    # statements
    ("class", body("class A:", "    pass", "return 0"), "line 2: class definitions are not allowed"),
    ("global", body("global x", "return 0"), "line 2: global statements are not allowed"),
    ("nonlocal", body("y = 0", "def g():", "    nonlocal y", "return 0"), "line 4: nonlocal statements"),
    ("with_open", body("with open('x') as fh:", "    return 0"), "line 2: with blocks are not allowed"),
    ("try", body("try:", "    return 0", "except Exception:", "    return 1"), "line 2: try blocks are not allowed"),
    ("del", body("y = 1", "del y", "return 0"), "line 3: del statements are not allowed"),
    ("match", body("match 1:", "    case 1:", "        return 0"), "line 2: match statements are not allowed"),
    ("yield", body("yield 1"), "line 2: generators (yield) are not allowed"),
    ("async", body("async def g():", "    return 0", "return 0"), "line 2: async functions are not allowed"),
    ("decorator", "@torch.no_grad()\n" + DPO, "line 1: decorators are not allowed"),
    ("nested_decorator", body("@abs", "def g():", "    return 0", "return 0"), "decorators are not allowed"),
    ("default_argument", body("def g(x=torch.save):", "    return x", "return 0"), "line 2: torch.save is not"),
    ("annotation", body("y: torch.hub = 1", "return y"), "line 2: torch.hub is not allowed"),
]


@pytest.mark.parametrize(("code", "reason"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_rejected_with_reason(code, reason):
    with pytest.raises(GateError) as error:
        check_code(code)
    assert reason in str(error.value)


def test_reasons_carry_the_line_of_the_offence():
    code = body("logits = policy_chosen_logps - policy_rejected_logps", "", "# a comment", "return logits.numpy()")
    with pytest.raises(GateError, match=r"^line 5: \.numpy is not allowed"):
        check_code(code)


def test_strings_do_not_fool_the_gate():
    # Strings may hold anything: nothing in the vetted set can turn one into a name or code.
    code = body("s = 'import os; os.system(\"x\")' + f'{policy_chosen_logps.shape} __import__'", "return 0 * len(s)")
    assert check_code(code) == "f"


def test_the_vetted_sets_leave_out_the_dangerous_names():
    assert not {"save", "load", "from_file", "hub", "utils", "ops", "jit", "compile", "cuda"} & ALLOWED_TORCH
    assert not {"open", "eval", "exec", "compile", "getattr", "globals", "type", "print"} & ALLOWED_BUILTINS
    assert {"logsigmoid", "softplus", "cross_entropy"} <= ALLOWED_F and {"pi", "e", "log"} <= ALLOWED_MATH
    assert {"numpy", "data", "grad", "register_hook", "storage", "mro", "format"} <= FORBIDDEN_TENSOR_METHODS
    assert all(isinstance(s, frozenset) for s in (ALLOWED_TORCH, ALLOWED_F, ALLOWED_MATH, ALLOWED_BUILTINS))
