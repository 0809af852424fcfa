"""``podisco llm serve``: a local, offline LLM (llama.cpp on a GGUF file) for ``--proposer llm``."""

from __future__ import annotations

import argparse
import signal

from podisco.cli.common import existing_file, positive_int
from podisco.cli.discovery import port
from podisco.errors import PodiscoError


class _Stop(Exception):
    """SIGTERM, turned into an exception so that the server is stopped on the way out."""


def cmd_llm_serve(args: argparse.Namespace) -> int:
    from podisco.local_llm import LocalLLMServer, require_local_llm

    require_local_llm()
    existing_file(args.model, "--model")

    def on_term(signum: int, frame: object) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_term)
    server = LocalLLMServer(args.model, threads=args.threads, port=args.port, ctx_size=args.ctx_size, log_path=args.log)
    try:
        server.start()
        url = server.base_url
        threads = f"{server.threads} thread{'' if server.threads == 1 else 's'}"
        print(
            f"serving {server.model_path.name} at {url} ({threads}): use --proposer llm --base-url {url} "
            f"--model {server.model_name}  (Ctrl-C to stop)",
            flush=True,
        )
        code = server.wait()  # serves until a signal; returning means the server died on its own
        raise PodiscoError(
            f"the local LLM server exited on its own (exit status {code})"
            + (f"; its log ends: {tail}" if (tail := server.log_tail()) else "")
        )
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)


def add_commands(commands: argparse._SubParsersAction) -> None:
    llm = commands.add_parser("llm", help="a local, offline LLM for --proposer llm (llama.cpp, a GGUF model)")
    sub = llm.add_subparsers(dest="llm_command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "serve", help="serve a GGUF model on 127.0.0.1 (OpenAI-compatible) until Ctrl-C; needs podisco[local-llm]"
    )
    p.add_argument("--model", required=True, help="the model: a .gguf file")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: this process's cores, at most 8)")
    p.add_argument("--port", type=port, default=0, help="0 (default): any free port")
    p.add_argument(
        "--ctx-size", dest="ctx_size", type=positive_int, default=4096, help="context in tokens (prompt + reply)"
    )
    p.add_argument("--log", help="append llama.cpp's log to this file (default: a temporary file, gone at the end)")
    p.set_defaults(func=cmd_llm_serve)
