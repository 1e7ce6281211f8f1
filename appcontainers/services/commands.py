"""Commands running in a container's agent: which ones `run` started, and signalling them.

The agent's log is the record: a command started by `run` (any id but the agent's own
`startup-N`) that has a `started` and no `exit` since the agent last started still runs."""
from __future__ import annotations

from ..domain.exceptions import InvalidValue
from .containers import ContainerService


def running(cs: ContainerService, name: str) -> list[str]:
    """Ids of the commands started by `run` in container name that are still running, oldest first."""
    live: dict[str, None] = {}
    for _, rec in cs.logs(name):
        kind, cid = rec.get("type"), rec.get("id")
        if kind == "agent_started":
            live.clear()  # a restarted agent runs none of the old ones
        elif not isinstance(cid, str):
            continue
        elif kind == "started" and not cid.startswith("startup-"):
            live[cid] = None
        elif kind == "exit":
            live.pop(cid, None)
    return list(live)


def kill(cs: ContainerService, name: str, command_id: str | None = None, signal: int = 15) -> str:
    """Send signal to a command of container name; the id signalled. Without command_id: the
    one command started by `run` that still runs; refused when none or several do (listed)."""
    if not 0 < signal < 65:
        raise InvalidValue(f"signal must be from 1 to 64, not {signal}")
    if command_id is None:
        ids = running(cs, name)
        if len(ids) != 1:
            raise InvalidValue(f"no command started by run is running in {name}" if not ids else
                               f"{len(ids)} commands run in {name}, name one: {' '.join(ids)}")
        command_id = ids[0]
    cs.agent(name).kill(command_id, signal)
    return command_id
