"""Startup commands edited by many processes at once, over the real JsonStore and its flock:
each edit reads and writes the reservation in one transaction, so none is lost."""
from __future__ import annotations

import multiprocessing

FORK = multiprocessing.get_context("fork")
N = 8
ROUNDS = 5  # one round of a lost update slips through now and then; five in a row do not


def _at_once(target, args_of):
    """Run target(*args_of(i)) in N forked processes released together; their exit codes."""
    barrier = FORK.Barrier(N)

    def child(i):
        barrier.wait(timeout=30)
        target(*args_of(i))

    procs = [FORK.Process(target=child, args=(i,)) for i in range(N)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    return [p.exitcode for p in procs]


class TestStartupCommandRace:
    def test_eight_processes_adding_at_once_keep_every_command(self, svc, container):
        """8 processes each adding a startup command to one container at once: all 8 are kept."""
        name = container.name
        for n in range(ROUNDS):
            codes = _at_once(lambda cmd: svc.get(name).add_startup_command(cmd), lambda i: (f"echo {n}-{i}",))
            assert codes == [0] * N
            assert sorted(svc.get(name).startup_commands) == sorted(f"echo {m}-{i}" for m in range(n + 1)
                                                                     for i in range(N))

    def test_eight_processes_removing_at_once_remove_every_command(self, svc, container):
        """8 processes each removing a different startup command at once: all 8 are gone, the rest stays."""
        name = container.name
        for _ in range(ROUNDS):
            svc.containers.set_startup_commands(name, [f"echo gone-{i}" for i in range(N)] + ["echo stays"])
            codes = _at_once(lambda cmd: svc.get(name).remove_startup_command(cmd), lambda i: (f"echo gone-{i}",))
            assert codes == [0] * N
            assert svc.get(name).startup_commands == ("echo stays",)
