"""The commands around `run`: kill (signal a running command) and shell (an interactive shell).

cli.py adds them to its group with register(main), as cli_inspect's."""
from __future__ import annotations

import signal as signals
import sys

import click

from .cli_common import complete_containers, emit, json_option, service


def parse_signal(text: str) -> int:
    """A signal by number (9), name (KILL) or full name (SIGKILL); BadParameter otherwise."""
    if text.isdigit() and 0 < int(text) < 65:
        return int(text)
    name = text.upper()
    try:
        return int(signals.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        raise click.BadParameter(f"{text!r} is no signal (a number from 1 to 64, or a name such as TERM)",
                                 param_hint="--signal") from None


@click.command()
@click.argument("name", shell_complete=complete_containers)
@click.argument("command_id", required=False)
@click.option("-s", "--signal", "sig", default="TERM", show_default=True, help="The signal, by name or number.")
@json_option
def kill(name, command_id, sig, as_json):
    """Signal a command running in a container: appcontainers kill NAME [CMD-ID] [--signal SIG].

    Without CMD-ID: the one command started by `run` that still runs there; when several run,
    nothing is signalled and their ids are listed (give one). Prints the id signalled."""
    number = parse_signal(sig)
    cid = service().get(name).kill(command_id, number)
    emit(as_json, {"name": name, "id": cid, "signal": number}, cid)


@click.command()
@click.argument("name", shell_complete=complete_containers)
@click.option("-u", "--user", metavar="USER", help="Run as USER, UID, USER:GROUP or UID:GID of the container.")
def shell(name, user):
    """A login shell in a container (/bin/sh -l; as root unless -u): `run -it NAME -- /bin/sh -l`.

    On a terminal it is interactive (a pseudo-terminal in the container); with stdin a pipe or
    file, the shell reads its commands from there. Exits with the shell's exit code."""
    from . import run_session

    tty = sys.stdin is not None and sys.stdin.isatty()
    how = run_session.How(interactive=True, tty=tty, user=user)
    code = run_session.run(service().get(name), ["/bin/sh", "-l"], how)
    sys.exit(run_session.exit_status(code))


def register(group: click.Group) -> None:
    for command in (kill, shell):
        group.add_command(command)
