import pytest

from podisco.discovery.gate import GateError, check_code
from podisco.discovery.prompts import CLASSIFICATION_SEEDS, PREFERENCE_SEEDS

HEAD = "def f(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):\n"


def body(*lines: str) -> str:
    return HEAD + "".join(f"    {line}\n" for line in lines)


ACCEPTED = [
    *PREFERENCE_SEEDS.values(),
    *CLASSIFICATION_SEEDS.values(),
    "import torch\nimport torch.nn.functional as F\nimport math\n\n" + PREFERENCE_SEEDS["dpo"],
    '"""A docstring."""\nfrom torch.nn import functional as F\n' + PREFERENCE_SEEDS["dpo"],
    body(
        "def helper(x):",
        "    return torch.where(x > 0, F.softplus(-x), math.pi * x ** 2)",
        "logits = policy_chosen_logps - policy_rejected_logps",
        "scale = [self.beta * k for k in range(3)]",
        "out = helper(scale[1] * logits).clamp(min=0).float()",
        "while False:",
        "    pass",
        "return out.to(torch.float32) + 0 * logits.item()",
    ),
]


@pytest.mark.parametrize("code", ACCEPTED)
def test_accepted(code):
    assert check_code(code)


REJECTED = [
    ("import os\n" + PREFERENCE_SEEDS["dpo"], "line 1: import of 'os'"),
    ("import subprocess\n" + PREFERENCE_SEEDS["dpo"], "import of 'subprocess'"),
    ("import ctypes\n" + PREFERENCE_SEEDS["dpo"], "import of 'ctypes'"),
    ("import torch.utils.data\n" + PREFERENCE_SEEDS["dpo"], "import of 'torch.utils.data'"),
    ("from torch import hub\n" + PREFERENCE_SEEDS["dpo"], "only `import torch`"),
    ("import torch as t\n" + PREFERENCE_SEEDS["dpo"], "import of 'torch' as t"),
    (body("import os", "return policy_chosen_logps"), "line 2: import of 'os'"),
    (body("return __import__('os').system('x')"), "underscore"),
    (body("return getattr(torch, 'sa' + 've')"), "unknown name 'getattr'"),
    (body("torch.save(policy_chosen_logps, '/tmp/x')", "return policy_chosen_logps"), "torch.save is not allowed"),
    (body("return torch.load('/etc/passwd')"), "torch.load is not allowed"),
    (body("return torch.from_file('/etc/passwd')"), "torch.from_file is not allowed"),
    (body("return torch.hub.load('a', 'b')"), "torch.hub.load is not allowed"),
    (body("return torch.utils.cpp_extension.load_inline('a', 'b')"), "torch.utils.cpp_extension.load_inline"),
    (body("torch.ops.load_library('x.so')", "return 0"), "torch.ops.load_library"),
    (body("return ().__class__.__bases__[0].__subclasses__()"), "'__subclasses__'"),
    (body("return open('/etc/passwd').read()"), "unknown name 'open'"),
    (body("return eval('1')"), "unknown name 'eval'"),
    (body("exec('x = 1')", "return 0"), "unknown name 'exec'"),
    (body("return compile('1', 'f', 'eval')"), "unknown name 'compile'"),
    (body("return globals()"), "unknown name 'globals'"),
    (body("return policy_chosen_logps.numpy()"), ".numpy is not allowed"),
    (body("policy_chosen_logps.register_hook(print)", "return 0"), ".register_hook is not allowed"),
    (body("return self.__dict__"), "'__dict__'"),
    (body("return self.other"), "self.other is not available"),
    (body("class A:", "    pass", "return 0"), "class definitions"),
    (body("global x", "return 0"), "global statements"),
    (body("with open('x') as f:", "    return 0"), "with blocks"),
    (body("try:", "    return 0", "except Exception:", "    return 1"), "try blocks"),
    (body("return lambda: __builtins__"), "underscore"),
    (body("t = torch", "return t.save"), "torch may only be used as torch.<operation>"),
    (body("torch = 1", "return torch"), "assigning to 'torch'"),
    (body("return os.system('ls')"), "unknown name 'os'"),
    (body("return policy_chosen_logps.data"), ".data is not allowed"),
    (body("torch.exp = torch.sigmoid", "return 0"), "assigning to an attribute ('exp')"),
    (body("self.beta = 10", "return 0"), "assigning to an attribute ('beta')"),
    (PREFERENCE_SEEDS["dpo"] + "\n" + PREFERENCE_SEEDS["ipo"], "exactly one top-level function; found 2 (dpo, ipo)"),
    ("x = 1\n" + PREFERENCE_SEEDS["dpo"], "line 1: only imports and one function"),
    ("import torch\n", "found 0"),
    ("def f(x:\n    return x\n", "syntax error"),
    ("@torch.no_grad()\n" + PREFERENCE_SEEDS["dpo"], "decorators"),
    (PREFERENCE_SEEDS["dpo"] + "#" * 9000, "the limit is 8000"),
]


@pytest.mark.parametrize(("code", "reason"), REJECTED, ids=[r for _, r in REJECTED])
def test_rejected_with_reason(code, reason):
    with pytest.raises(GateError) as error:
        check_code(code)
    assert reason in str(error.value)
