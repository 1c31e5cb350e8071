"""Worker processes on this machine: start them, forward Ctrl-C / SIGTERM to them once, wait for them.

Each worker is a fresh ``python -m hpo.worker`` that reads its job (JSON) on stdin: URLs with
passwords never appear on a command line (``ps`` shows those to every user). Workers run in
their own process group, so a Ctrl-C in the terminal reaches only this process, which forwards
it exactly once; a worker would otherwise get it twice and could be interrupted in its clean-up.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Callable

from hpo.interrupts import interrupts_deferred, stop_signal

POLL_S = 2.0
# After forwarding a stop signal, how long a worker may take to close its trial before it is killed
# (its trial is then failed by the stale-trial check and retried by the next start).
STOP_GRACE_S = 120.0
INTERRUPTED = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def run_worker_processes(jobs: list[str], on_poll: Callable[[], None]) -> list[int]:
    """Run one ``python -m hpo.worker`` per job until all exit; return their exit codes.

    ``on_poll`` runs every few seconds meanwhile (progress). A ``KeyboardInterrupt`` here (Ctrl-C)
    is passed on to every worker as SIGINT, anything else (SIGTERM's
    :class:`~hpo.interrupts.Terminated`, an error) as SIGTERM; once they have exited it is raised again.
    """
    processes = [subprocess.Popen([sys.executable, "-m", "hpo.worker"], stdin=subprocess.PIPE, text=True,
                                  process_group=0) for _ in jobs]
    try:
        for process, job in zip(processes, jobs):
            process.stdin.write(job)
            process.stdin.close()
        while any(process.poll() is None for process in processes):
            on_poll()
            time.sleep(POLL_S)
    except BaseException as error:  # Ctrl-C, SIGTERM, or this process failing: never leave workers behind
        with interrupts_deferred():
            stop(processes, stop_signal(error))
        raise
    on_poll()
    return [process.returncode for process in processes]


def stop(processes: list[subprocess.Popen], signum: int) -> None:
    """Send ``signum`` to the running workers and wait for them; kill those that outlast the grace period."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
