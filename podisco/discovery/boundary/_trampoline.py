"""Exec trampoline: set rlimits and the parent-death signal on this process, then exec the real command.

``sandbox.run_sandboxed`` starts every sandboxed command through this file, as
``python -I -S _trampoline.py ERRFD PARENT_PID PDEATHSIG RESOURCE=VALUE... -- ARGV...``, instead of
a ``subprocess.Popen`` ``preexec_fn``: CPython documents ``preexec_fn`` as not safe in the presence of threads
(the child of a fork from a multi-threaded parent may deadlock on a lock another thread held), and the
discovery parent launches jobs from a ThreadPoolExecutor — a deadlock there would be recorded as the
candidate's timeout. Here the same work runs after a clean exec, in a fresh single-threaded interpreter.

Run with ``-I -S`` (no environment variables, no site, no script folder on sys.path): it imports only the
standard library, whatever the sandboxed command's environment says. The rlimits and the parent-death
signal survive the final exec (the signal is cleared only for a setuid/setgid/file-capability binary), so
they hold for the launcher (bwrap, unshare) and everything it starts, exactly as a ``preexec_fn`` would.

Any failure before the exec is written to ERRFD as ``errno<TAB>stage<TAB>message`` (stage ``setup`` or
``exec``), which the launching parent reads and raises; a successful exec closes ERRFD (it is made
close-on-exec) and the parent reads end-of-file. Exit status 127 on failure, like a shell's.
"""

import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(sig: int, parent: int) -> None:
    import ctypes  # only here: the one thing the standard library cannot do without it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != parent:  # the parent died before the prctl: the signal will never come
        os.kill(os.getpid(), sig)


def main(args: list[str]) -> None:
    errfd, stage = int(args[0]), "setup"
    try:
        parent, death_signal = int(args[1]), int(args[2])
        split = args.index("--")
        limits = [item.split("=", 1) for item in args[3:split]]
        argv = args[split + 1 :]
        if not argv:
            raise ValueError("no command to run")
        if death_signal and sys.platform.startswith("linux"):
            _set_parent_death_signal(death_signal, parent)
        for name, value in limits:
            number = resource.RLIM_INFINITY if value == "unlimited" else int(value)
            resource.setrlimit(getattr(resource, name), (number, number))
        for name in ("SIGPIPE", "SIGXFSZ"):  # ignored by this interpreter at startup; an ignored signal would
            signal.signal(getattr(signal, name), signal.SIG_DFL)  # stay ignored across exec (Popen restores them)
        os.set_inheritable(errfd, False)  # closed by a successful exec: the parent reads end-of-file
        stage = "exec"
        os.execvp(argv[0], argv)
    except BaseException as error:  # every failure goes back to the parent
        number = error.errno if isinstance(error, OSError) and error.errno else 0
        message = f"{number}\t{stage}\t{type(error).__name__}: {error}".encode(errors="replace")
        try:
            os.write(errfd, message)
        finally:
            os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
