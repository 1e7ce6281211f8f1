"""The console script's entry: the hot forms of the command without click.

`appcontainers --help`, `--version`, `ls [--json]` and `run [-it] [-e K=V] [-w DIR] [-u USER]
[--timeout S] NAME -- CMD...` are answered here, importing neither click nor the API's wiring:
the state is read as JSON, the container states come from one `lxc-ls`, and `run` talks to
the agent through the same AgentClient and run_session the click command uses. Everything
else, and any of these forms in a situation the lean path does not handle exactly as the
click command would (not root, no state yet, an operation to reconcile, an agent that does
not answer, an unusual option), goes to the click CLI in cli.py, unchanged.

What is shared with cli.py lives here (click-free): the ls columns and table, the error
line, `run`'s argument order and -e parsing, the help text (tests/unit/test_cli_lean.py checks
it against click's rendering and prints click's text when they differ: paste that into HELP
after adding a command or changing a command's first help line).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

VERSION = "0.1.0"  # setup.py's; a test checks both and the installed metadata agree
DEFAULT_ROOT = "/var/lib/appcontainers"  # config.DEFAULT_ROOT (a test checks)
DEFAULT_SUBNET = "10.0.100.0/24"  # config.Settings.subnet's default (a test checks)
PROG = "appcontainers"

# `appcontainers --help` as click renders it at the width it uses on an 80-column (or wider)
# terminal or a pipe. tests/unit/test_cli_lean.py checks it is click's text.
HELP = """\
Usage: appcontainers [OPTIONS] COMMAND [ARGS]...

  Build, run and monitor LXC app containers and their images.

Options:
  --debug     Log what the library does (commands, state changes) to stderr;
              APPCONTAINERS_LOG=debug|info|warning does the same.
  --version   Show the version and exit.
  -h, --help  Show this message and exit.

Commands:
  add-startup   Add a startup command (a shell string) run at every start.
  base          Base images.
  cp            Copy files or directories between a container and the host,...
  events        Stream events from every container (started, stopped,...
  export        Export image IMAGE (id, id prefix or name) or container...
  fleet         Many hosts as one, on a Ray cluster: hosts, containers...
  gc            Reconcile the state with reality: remove what crashed...
  image         Inspect or browse images.
  images        List images (bases and user images).
  import        Import an OCI image as layered images (one per OCI layer).
  inspect       Show what is known of container NAME (address, image,...
  kill          Signal a command running in a container: appcontainers kill...
  load          Load the image file PATH into a new container (unprivileged...
  load-archive  Extract a tar archive into the container's home directory.
  logs          Print a container's command output and exits, recorded by...
  ls            List containers.
  provision     Create a container with a static IP and a random MAC...
  pull          Pull REF (HOST[:PORT]/REPO[:TAG] or ...@sha256:DIGEST) into...
  push          Push stored image IMAGE (id, prefix or name) and its...
  put           Copy the host file or directory SRC to DEST in the...
  rm            Destroy a container and free its address and MAC.
  rm-startup    Remove startup command number INDEX (as `add-startup` lists...
  rmi           Remove an image (by id, id prefix or name); refused while...
  run           Run a command in a container: appcontainers run [-it] [-e...
  save          Save container NAME to the image file PATH (.aimg).
  shell         A login shell in a container (/bin/sh -l; as root unless...
  start         Start a container (waits until its agent answers).
  stats         Show the resource use of container NAME (default: every...
  stop          Stop a container (an ephemeral one is removed).
  trust         Signing keys for push --sign and save --sign; the policy is...
"""

# run's options that take a value (click's run command has the same: a test checks).
RUN_VALUED = frozenset({"--timeout", "-e", "--env", "-w", "--workdir", "-u", "--user"})
_RUN_FLAGS = {"-i": "i", "--interactive": "i", "-t": "t", "--tty": "t", "-it": "it", "-ti": "it"}
_RUN_VALUE_KEYS = {"--timeout": "timeout", "-e": "env", "--env": "env", "-w": "workdir", "--workdir": "workdir",
                   "-u": "user", "--user": "user"}


class Fallback(Exception):
    """This call is the click CLI's to answer."""


def main(argv: list[str] | None = None) -> None:
    """The console script: a lean answer when there is one, else the click CLI."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        answer = _lean(args)
        if answer is not None:
            sys.exit(answer())
    except Fallback:
        pass
    except KeyboardInterrupt:  # as click's group says it
        sys.stderr.write(f"{PROG}: interrupted\n")
        sys.exit(130)
    from .cli import main as click_main

    click_main(args)


def _lean(args: list[str]) -> Callable[[], int] | None:
    """The lean handler of args (a callable giving the exit code), or None for click."""
    if os.path.basename(sys.argv[0]) != PROG or os.environ.get("APPCONTAINERS_LOG") \
            or any(k.startswith("_APPCONTAINERS") for k in os.environ):  # _..._COMPLETE: click's completion
        return None
    if args in (["--help"], ["-h"]) and _columns() >= 80:
        return lambda: _print(HELP, end="")
    if args == ["--version"]:
        return lambda: _print(f"{PROG} {VERSION}")
    if args and args[0] == "ls":
        as_json = _ls_args(args[1:])
        return None if as_json is None else lambda: ls(as_json)
    if args and args[0] == "run":
        parsed = parse_run(args[1:])
        return None if parsed is None else lambda: run(*parsed)
    return None


def _print(text: str, end: str = "\n") -> int:
    sys.stdout.write(text + end)
    return 0


def _columns() -> int:
    """The terminal width click formats help for (shutil.get_terminal_size's rules, without shutil)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


# ---- what cli.py shares ---------------------------------------------------------------------

def error_text(message: str, kind: str, as_json: bool) -> str:
    """The one line an error becomes on stderr: text, or {"error": ..., "type": ...} under --json."""
    if as_json:
        return json.dumps({"error": message, "type": kind}, sort_keys=True)
    return f"{PROG}: error: {message}"


def table_lines(infos: list[dict], columns) -> list[str]:
    """infos as the lines of a table of columns (title, width, value of an info)."""
    return [" ".join(f"{c:<{w}}" for c, (_, w, _) in zip(cells, columns)).rstrip()
            for cells in [[title for title, _, _ in columns], *[[str(get(i)) for _, _, get in columns] for i in infos]]]


LS_COLUMNS = [
    ("NAME", 24, lambda i: i["name"]), ("STATE", 9, lambda i: i["state"]),
    ("IMAGE", 20, lambda i: i["image_name"] or i["image"][:12]), ("IP", 15, lambda i: i["ip"]),
    ("MAC", 17, lambda i: i["mac"]), ("EPHEMERAL", 9, lambda i: "yes" if i["ephemeral"] else "no"),
    ("PORTS", 0, lambda i: ",".join(i.get("ports", ())))]


def ls_text(infos: list[dict], as_json: bool) -> str:
    """What `ls` prints for these container infos (Container.info() plus image_name)."""
    return json.dumps(infos, sort_keys=True) if as_json else "\n".join(table_lines(infos, LS_COLUMNS))


def reservation_info(rec: dict[str, Any], state: str) -> dict[str, Any]:
    """Container.info() of a reservation record as stored (Reservation.to_dict()) and its state."""
    return {"name": rec["name"], "ip": rec["ip"], "mac": rec["mac"], "state": state, "image": rec["image"],
            "ephemeral": rec["ephemeral"], "startup_commands": list(rec["startup_commands"]),
            "status": rec["status"], "privileged": rec["idmap"] is None, "caps_add": list(rec["caps_add"]),
            "pids": rec["pids"], "disk": rec["disk"], "ports": list(rec["publish"])}


def options_first(args: list[str], valued) -> list[str]:
    """run's arguments as click reads them: options (before or after NAME), NAME, "--", the
    command. The command starts at "--" or at the first word after NAME that is no option,
    as in `docker exec`: `run web --timeout 2 -- sleep 1`, `run -it web sh`."""
    opts: list[str] = []
    name: list[str] = []
    i, dashes = 0, False
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i, dashes = i + 1, True
            break
        if arg.startswith("-") and arg != "-":
            opts += args[i:i + 2] if arg in valued else [arg]
            i += 2 if arg in valued else 1
        elif not name:
            name, i = [arg], i + 1
        else:
            break
    command = args[i:]
    return opts + name + (["--", *command] if command or dashes else [])


def env_pairs(pairs) -> dict[str, str] | None:
    """-e KEY=VAL options as a dict (a later KEY wins); ValueError naming a bad one."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key or "\0" in pair:
            raise ValueError(f"{pair!r} is not KEY=VAL")
        env[key] = value
    return env or None


# ---- ls -------------------------------------------------------------------------------------

def _ls_args(rest: list[str]) -> bool | None:
    """as_json for ls's arguments, None for any other form than [--json] [--format table|json]."""
    as_json, fmt = False, "table"
    i = 0
    while i < len(rest):
        if rest[i] == "--json":
            as_json, i = True, i + 1
        elif rest[i] == "--format" and i + 1 < len(rest) and rest[i + 1] in ("table", "json"):
            fmt, i = rest[i + 1], i + 2
        else:
            return None
    return as_json or fmt == "json"


def _root() -> str:
    """The data root of this call, if the lean path can use it (as Settings and setup_service
    would check it: absolute, no whitespace, and as data_root.prepare leaves it); else Fallback."""
    root = os.environ.get("APPCONTAINERS_ROOT") or DEFAULT_ROOT
    if os.geteuid() != 0 or not os.path.isabs(root) or any(c.isspace() for c in root) or "\\" in root:
        raise Fallback()
    from ..adapters.host import data_root
    from ..domain.exceptions import AppContainersError

    try:
        data_root.check_ancestors(root)
        data_root.check_not_writable(root, "data root")
        data_root.check_tree(os.path.join(root, "skeletons"), "skeletons")
    except AppContainersError:
        raise Fallback() from None
    return root


def read_state(root: str) -> dict[str, Any]:
    """resources.json as JSON, when nothing in it needs a reconcile first (no operation in
    progress) and its subnet is the configured one; else Fallback (click reconciles, or says why)."""
    try:
        with open(os.path.join(root, "resources.json"), "rb") as f:
            data = json.loads(f.read())
        pending = data["operations"]
        network = data["pool"]["network"]
    except (OSError, ValueError, KeyError, TypeError):
        raise Fallback() from None
    if pending or network != (os.environ.get("APPCONTAINERS_SUBNET") or DEFAULT_SUBNET):
        raise Fallback()
    return data


def ls(as_json: bool) -> int:
    root = _root()
    data = read_state(root)
    try:
        infos = ls_infos(data, lxc_states(os.path.join(root, "containers")))
    except (KeyError, TypeError, AttributeError):
        raise Fallback() from None
    return _print(ls_text(infos, as_json))


def ls_infos(data: dict[str, Any], states: dict[str, str]) -> list[dict[str, Any]]:
    """The infos `ls` shows, from the state as stored and the containers' states."""
    names = {i: img["manifest"].get("name") for i, img in data["images"].items()}
    records = sorted(data["reservations"].values(), key=lambda r: r["name"])
    return [{**reservation_info(r, states.get(r["name"], "MISSING")), "image_name": names.get(r["image"])}
            for r in records]


def lxc_states(lxcpath: str) -> dict[str, str]:
    """{name: state} of the containers defined under lxcpath, from one `lxc-ls --active`: an
    active one is FROZEN if its cgroup's freezer says so, else RUNNING; the others STOPPED."""
    try:
        names = sorted(n for n in os.listdir(lxcpath) if os.path.exists(os.path.join(lxcpath, n, "config")))
    except FileNotFoundError:
        return {}
    if not names:
        return {}
    active = set(_lxc_ls_active(lxcpath))
    return {n: (_frozen_or_running(lxcpath, n) if n in active else "STOPPED") for n in names}


def _lxc_ls_active(lxcpath: str) -> list[str]:
    """`lxc-ls -P lxcpath --active -1`. Not through adapters/host/process.py, whose imports
    (shutil, shlex, selectors, logging) cost a third of a bare Python start: an argv, a timeout,
    and any failure (no lxc-ls, an error, a hang) left to click's ls, which says what it is."""
    import subprocess

    try:
        proc = subprocess.run(["lxc-ls", "-P", lxcpath, "--active", "-1"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        raise Fallback() from None
    if proc.returncode != 0:
        raise Fallback()
    return proc.stdout.decode().split()


def cgroup_dir(lxcpath: str, name: str) -> str:
    """The container's lxc.cgroup.dir.container, from its LXC config; Fallback if it has none."""
    try:
        with open(os.path.join(lxcpath, name, "config")) as f:
            for line in f:
                key, eq, value = line.partition("=")
                if eq and key.strip() == "lxc.cgroup.dir.container":
                    return value.strip()
    except OSError:
        pass
    raise Fallback()


def _frozen_or_running(lxcpath: str, name: str) -> str:
    """An active container's state from its freezer (cgroup v1 freezer.state or v2 cgroup.freeze);
    Fallback (click asks LXC) when neither says FROZEN or THAWED plainly."""
    rel = cgroup_dir(lxcpath, name)
    if not rel or rel.startswith("/") or ".." in rel.split("/"):
        raise Fallback()
    for path, frozen, thawed in ((f"/sys/fs/cgroup/freezer/{rel}/freezer.state", "FROZEN", "THAWED"),
                                 (f"/sys/fs/cgroup/{rel}/cgroup.freeze", "1", "0")):
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value in (frozen, thawed):
            return "FROZEN" if value == frozen else "RUNNING"
        break
    raise Fallback()


# ---- run ------------------------------------------------------------------------------------

def parse_run(args: list[str]):
    """(name, command, How) for run's arguments in the forms the lean path takes, else None."""
    ordered = options_first(args, RUN_VALUED)
    if "--" not in ordered:
        return None
    cut = ordered.index("--")
    opts, name, command = ordered[:cut - 1], ordered[cut - 1:cut], ordered[cut + 1:]
    if not name or name[0].startswith("-") or not command:
        return None
    values = _run_options(opts)
    if values is None:
        return None
    from . import run_session

    how = run_session.How(values["timeout"], "i" in values["flags"], "t" in values["flags"], values["env"],
                          values["workdir"], values["user"])
    return name[0], command, how


def _run_options(opts: list[str]) -> dict[str, Any] | None:
    values: dict[str, Any] = {"flags": "", "timeout": None, "env": [], "workdir": None, "user": None}
    i = 0
    while i < len(opts):
        opt = opts[i]
        if opt in _RUN_FLAGS:
            values["flags"] += _RUN_FLAGS[opt]
            i += 1
            continue
        key = _RUN_VALUE_KEYS.get(opt)
        if key is None or i + 1 >= len(opts):
            return None
        if key == "env":
            values["env"].append(opts[i + 1])
        else:
            values[key] = opts[i + 1]
        i += 2
    try:
        values["env"] = env_pairs(values["env"])
        values["timeout"] = None if values["timeout"] is None else float(values["timeout"])
    except ValueError:
        return None  # click says what is wrong, in its words
    return values


class AgentContainer:
    """What run_session.run needs of a container: run(command, **options), here straight through
    its live agent, as ContainerService.run does for a container whose agent answers (the
    options, whatever run_session passes, are AgentClient.run's keywords)."""

    def __init__(self, client) -> None:
        self.client = client

    def run(self, command, **options):
        from ..services.result import RunResult

        code, out, err, _ = self.client.run(argv=list(command), shell=None, on_output=None, **options)
        return RunResult(exit_code=code, stdout=out, stderr=err)


def run(name: str, command: list[str], how) -> int:
    """The command in the container through its agent, when the agent answers (a stopped
    container is click's: its run starts it first)."""
    root = _root()
    rec = read_state(root)["reservations"].get(name)
    if not isinstance(rec, dict) or rec.get("status") != "ready" or not rec.get("agent_key"):
        raise Fallback()
    from ..adapters.bus.zmq_bus import AgentClient

    client = AgentClient(os.path.join(root, "run", name, "agent"), server_key=rec["agent_key"])  # Layout.agent_dir
    if not client.alive():
        raise Fallback()
    from ..domain.exceptions import AppContainersError, HostError
    from . import run_session

    try:
        return run_session.exit_status(run_session.run(AgentContainer(client), command, how))
    except AppContainersError as e:
        return _error(str(e), type(e).__name__)
    except OSError as e:
        wrapped = HostError("run", e)
        return _error(str(wrapped), type(wrapped).__name__)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


def _error(message: str, kind: str) -> int:
    sys.stderr.write(error_text(message, kind, False) + "\n")
    return 1


if __name__ == "__main__":
    main()
