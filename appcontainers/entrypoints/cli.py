"""The appcontainers command: each subcommand parses, calls the service, prints.

The service comes from the click context (ctx.obj: a callable reconcile -> Service, made only
when a command needs it), so tests run the CLI over fakes with CliRunner(obj=...).
Imports are lazy so `appcontainers --help` stays close to a bare Python start.
"""
from __future__ import annotations

import json
import os
import sys

import click

from .cli_common import (emit, error, human_size, service, complete_containers, complete_images,
                         json_option)
from .cli_lean import VERSION, env_pairs, ls_text, options_first, table_lines


def setup_service(reconcile: bool = True):
    """The real Service (root, real adapters): what ctx.obj is unless a caller gave one."""
    from . import api

    return api.setup_service(reconcile=reconcile)


class _Group(click.Group):
    """Turns our errors into one line on stderr (a JSON object under --json) and exit code 1,
    never a traceback; usage errors exit 1 too (the README's promise: 1 for every error)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        self.json_errors = "--json" in (argv[:argv.index("--")] if "--" in argv else argv)  # not a command's own
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            if self.json_errors:
                error(e.format_message(), type(e).__name__, True)
            else:
                e.show()
            sys.exit(1)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        from ..domain.exceptions import AppContainersError, HostError

        try:
            return super().invoke(ctx)
        except AppContainersError as e:
            error(str(e), type(e).__name__, getattr(self, "json_errors", False))
            ctx.exit(1)
        except OSError as e:
            wrapped = HostError(ctx.invoked_subcommand or ctx.info_name, e)
            error(str(wrapped), type(wrapped).__name__, getattr(self, "json_errors", False))
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("appcontainers: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True,
              help="Log what the library does (commands, state changes) to stderr; "
                   "APPCONTAINERS_LOG=debug|info|warning does the same.")
@click.version_option(VERSION, "--version", prog_name="appcontainers", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx, debug):
    """Build, run and monitor LXC app containers and their images."""
    from . import log_config

    log_config.configure(log_config.level_from(debug, os.environ))
    if ctx.obj is None:
        ctx.obj = setup_service


PUBLISH_HELP = ("Publish a container port on the host: [HOST_IP:]HOST_PORT:PORT[/udp], e.g. 8080:80 "
                "(repeatable).")
DISK_HELP = "Bound on what the container writes, e.g. 2G (default 10G or half the free space; 0: none)."


@main.command()
@click.option("--name", help="Container name (a-z, 0-9, '-'); random if omitted.")
@click.option("--base", help="Base image name (default: the built-in busybox base).")
@click.option("--memory", help="Memory limit, e.g. 256M.")
@click.option("--cpus", type=click.FloatRange(min=0, min_open=True), help="CPU limit in cores, e.g. 0.5.")
@click.option("--raw", is_flag=True, help="A plain directory in overlays/raw/ instead of an overlay.")
@click.option("--pids", type=click.IntRange(min=1), help="Process limit (default 4096).")
@click.option("--cap-add", "caps_add", multiple=True, metavar="CAP",
              help="Keep this capability too (capabilities(7) name, lowercase, no cap_), e.g. net_admin.")
@click.option("--privileged", is_flag=True,
              help="Root inside is the host's root (no user namespace): unsafe for untrusted code.")
@click.option("--unprivileged", is_flag=True, hidden=True, help="The default; accepted for old scripts.")
@click.option("--disk", help=DISK_HELP)
@click.option("-p", "--publish", multiple=True, metavar="PORTS", help=PUBLISH_HELP)
@click.option("--image", help="Any stored image (imported, loaded, pulled) by id, id prefix or name.")
@click.option("--start-default", is_flag=True, help="Run the image's default command at every start.")
@click.option("-P", "--publish-all", is_flag=True, help="Publish each port the image exposes on a free host port.")
@json_option
def provision(name, base, memory, cpus, raw, pids, caps_add, privileged, unprivileged, disk, publish, image,
              start_default, publish_all, as_json):
    """Create a container with a static IP and a random MAC (unprivileged unless --privileged)."""
    if privileged and unprivileged:
        raise click.UsageError("--privileged and --unprivileged contradict each other")
    c = service().provision(name=name, base=base, memory=memory, cpus=cpus, raw=raw, pids=pids,
                            caps_add=list(caps_add), privileged=privileged, disk=disk, publish=list(publish),
                            image=image, start_default=start_default, publish_all=publish_all)
    info = c.info()
    emit(as_json, info, f"{info['name']} ip={info['ip']} mac={info['mac']} state={info['state']}")


@main.command("ls")
@json_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              help="json: the same as --json (docker's spelling).")
def ls(as_json, fmt):
    """List containers."""
    as_json = as_json or fmt == "json"
    svc = service()
    names = {i.id: i.name for i in svc.list_images()}
    infos = [{**i, "image_name": names.get(i["image"])} for i in svc.container_infos()]
    click.echo(ls_text(infos, as_json))  # the lean `ls` (cli_lean.py) prints the same


def _table(infos: list[dict], as_json: bool, columns) -> None:
    """infos as JSON, or as a table of columns (title, width, value of an info)."""
    if as_json:
        emit(True, infos)
        return
    for line in table_lines(infos, columns):
        click.echo(line)


def _simple(verb: str, doc: str):
    @main.command(verb, help=doc)
    @click.argument("name", shell_complete=complete_containers)
    @json_option
    def cmd(name, as_json):
        svc = service()
        c = svc.get(name)
        ephemeral = c.ephemeral
        getattr(c, {"rm": "destroy"}.get(verb, verb))()
        gone = verb == "rm" or (verb == "stop" and ephemeral)  # an ephemeral container goes at stop
        state = "destroyed" if gone else c.state
        emit(as_json, {"name": name, "state": state}, f"{name} {state}")

    return cmd


_simple("start", "Start a container (waits until its agent answers).")
_simple("stop", "Stop a container (an ephemeral one is removed).")
_simple("rm", "Destroy a container and free its address and MAC.")


_options_first = options_first  # shared with the lean `run` (cli_lean.py)


class _RunCommand(click.Command):
    def parse_args(self, ctx, args):
        valued = {o for p in self.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}
        return super().parse_args(ctx, _options_first(list(args), valued))


@main.command(cls=_RunCommand, context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("name")
@click.argument("command", nargs=-1, required=False, type=click.UNPROCESSED)
@click.option("--timeout", type=float, help="Kill the command after this many seconds.")
@click.option("-i", "--interactive", is_flag=True,
              help="Send stdin to the command even when it is a terminal (a pipe or file always is).")
@click.option("-t", "--tty", is_flag=True,
              help="Run the command on a terminal (with -i from a terminal: an interactive session).")
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VAL",
              help="Set an environment variable for the command (repeatable).")
@click.option("-w", "--workdir", metavar="DIR", help="The command's working directory (default /).")
@click.option("-u", "--user", metavar="USER", help="Run as USER, UID, USER:GROUP or UID:GID of the container.")
@json_option
def run(name, command, timeout, interactive, tty, env, workdir, user, as_json):
    """Run a command in a container: appcontainers run [-it] [-e K=V] [-w DIR] [-u USER] NAME -- CMD [ARGS...].

    Without CMD: the image's default command (its entrypoint and cmd, as imported from OCI).

    Streams stdin in (when it is not a terminal, or with -i) and the output out, byte for
    byte; Ctrl-C and SIGTERM go to the command (a second Ctrl-C kills it); exits with its exit
    code (128+N when signal N ended it)."""
    from . import run_session

    command = list(command)
    if command and command[0] == "--":
        command = command[1:]
    command = command or None  # none: the image's default command
    how = run_session.How(timeout, interactive, tty, _env_pairs(env), workdir, user)
    c = service().get(name)
    if as_json:
        stdin = sys.stdin.buffer if sys.stdin is not None and (interactive or not sys.stdin.isatty()) else None
        r = c.run(command, timeout=timeout, stdin=stdin, env=how.env, cwd=workdir, user=user)
        emit(True, {"exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr})
        code = r.exit_code
    else:
        code = run_session.run(c, command, how)
    sys.exit(run_session.exit_status(code))


def _env_pairs(pairs) -> dict[str, str] | None:
    """-e KEY=VAL options as a dict (a later KEY wins); a bad one is a usage error."""
    try:
        return env_pairs(pairs)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="-e") from None


@main.command()
@click.argument("name")
@click.argument("src", type=click.Path(exists=True))
@click.argument("dest")
@click.option("--mode", default="644", help="Octal mode of a copied file (default 644).")
@json_option
def put(name, src, dest, mode, as_json):
    """Copy the host file or directory SRC to DEST in the container (into DEST if it is a directory)."""
    try:
        mode_int = int(mode, 8)
    except ValueError:
        raise click.BadParameter(f"{mode!r} is not an octal mode", param_hint="--mode")
    if os.path.isdir(src):
        path = service().get(name).copy_in(src, dest)
        emit(as_json, {"name": name, "path": path}, f"{name}:{path}")
        return
    size = os.path.getsize(src)
    path = service().get(name).copy_in(src, dest, mode=mode_int)
    emit(as_json, {"name": name, "path": path, "bytes": size}, f"{name}:{path} ({size} bytes)")


@main.command("load-archive")
@click.argument("name")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--dest", default="/root", help="Directory in the container (default: home, /root).")
@click.option("--max-bytes", metavar="SIZE", help="Refuse an archive unpacking to more, e.g. 2G (default 1G).")
@click.option("--max-members", type=click.IntRange(min=0), metavar="N",
              help="Refuse an archive of more members (default 100000).")
@json_option
def load_archive(name, archive, dest, max_bytes, max_members, as_json):
    """Extract a tar archive into the container's home directory."""
    from ..domain.sizes import parse_size

    limit = None if max_bytes is None else parse_size(max_bytes, "--max-bytes")
    n = service().get(name).load_archive(archive, dest, max_bytes=limit, max_members=max_members)
    emit(as_json, {"name": name, "members": n, "dest": dest}, f"{name}: {n} members into {dest}")


@main.command("add-startup")
@click.argument("name")
@click.argument("command")
@json_option
def add_startup(name, command, as_json):
    """Add a startup command (a shell string) run at every start."""
    cmds = service().get(name).add_startup_command(command)
    emit(as_json, {"name": name, "startup_commands": list(cmds)},
          "\n".join(f"{i}: {c}" for i, c in enumerate(cmds)))


@main.command("rm-startup")
@click.argument("name")
@click.argument("index", type=click.IntRange(min=0))
@json_option
def rm_startup(name, index, as_json):
    """Remove startup command number INDEX (as `add-startup` lists them)."""
    cmds = service().get(name).remove_startup_command(index)
    emit(as_json, {"name": name, "startup_commands": list(cmds)},
          "\n".join(f"{i}: {c}" for i, c in enumerate(cmds)) or "(no startup commands)")


def _image_info(img, size: int | None = None) -> dict:
    m = img.manifest
    return {"id": img.id, "name": m.name, "kind": img.kind, "parent": m.parent, "created": m.created, "size": size,
            "base": m.base, "startup_commands": list(m.startup_commands), "environment": m.environment,
            "format_version": m.format_version}


@main.command()
@click.argument("name")
@click.argument("path")
@click.option("--layered", is_flag=True, help="Save only the changes over the container's image (fast).")
@click.option("--image-name", help="The image's name (default: the container's).")
@click.option("--sign", metavar="KEY", help="Write a signature to PATH.sig with this private key (file or keygen name).")
@json_option
def save(name, path, layered, image_name, sign, as_json):
    """Save container NAME to the image file PATH (.aimg)."""
    svc = service()
    c = svc.get(name)
    if as_json:
        img = c.save_image(path, flatten=not layered, name=image_name, sign=sign)
    else:
        with click.progressbar(length=100, label=f"saving {name}", file=sys.stderr) as bar:
            done = [0]

            def progress(pct):
                pct = int(pct)
                if pct > done[0]:
                    bar.update(pct - done[0])
                    done[0] = pct

            img = c.save_image(path, flatten=not layered, name=image_name, progress=progress, sign=sign)
    emit(as_json, {**_image_info(img), "path": path}, f"{path} {img.id}")


@main.command()
@click.argument("path")
@click.option("--ephemeral", is_flag=True, help="Writes go to a throw-away overlay; removed at stop.")
@click.option("--name", help="Container name (random if omitted).")
@click.option("--raw", is_flag=True, help="Unpack into a plain directory in overlays/raw/ (slow).")
@click.option("--move", is_flag=True, help="Move the file into the store instead of copying it.")
@click.option("--privileged", is_flag=True,
              help="Root inside is the host's root (no user namespace): unsafe for untrusted code.")
@click.option("--disk", help=DISK_HELP)
@click.option("--cap-add", "caps_add", multiple=True, metavar="CAP", help="Keep this capability too, as for provision.")
@click.option("--pids", type=int, help="Process limit (default 4096).")
@click.option("--memory", help="Memory limit, e.g. 256M.")
@click.option("--cpus", type=float, help="CPU limit in cores, e.g. 0.5.")
@click.option("-p", "--publish", multiple=True, metavar="PORTS", help=PUBLISH_HELP)
@json_option
def load(path, ephemeral, name, raw, move, privileged, disk, caps_add, pids, memory, cpus, publish, as_json):
    """Load the image file PATH into a new container (unprivileged unless --privileged)."""
    c = service().load_image(path, ephemeral=ephemeral, name=name, raw=raw, move=move, privileged=privileged,
                             disk=disk, caps_add=list(caps_add), pids=pids, memory=memory, cpus=cpus,
                             publish=list(publish))
    info = c.info()
    emit(as_json, info, f"{info['name']} ip={info['ip']} mac={info['mac']} image={info['image'][:12]}"
                         f"{' ephemeral' if info['ephemeral'] else ''}")


@main.command()
@json_option
def images(as_json):
    """List images (bases and user images)."""
    svc = service()
    _list_images(svc, svc.list_images(), as_json)


def _ago(ts: float) -> str:
    import time

    secs = max(0, int(time.time() - ts))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= length:
            return f"{secs // length}{unit} ago"
    return f"{secs}s ago"


def _list_images(svc, images, as_json: bool) -> None:
    _table([_image_info(i, svc.image_size(i)) for i in images], as_json, [
        ("ID", 14, lambda i: i["id"][:12]), ("KIND", 5, lambda i: i["kind"]), ("NAME", 24, lambda i: i["name"]),
        ("SIZE", 8, lambda i: human_size(i["size"])), ("CREATED", 10, lambda i: _ago(i["created"])),
        ("PARENT", 0, lambda i: (i["parent"] or "-")[:12])])


@main.command()
@click.argument("ref", shell_complete=complete_images)
@json_option
def rmi(ref, as_json):
    """Remove an image (by id, id prefix or name); refused while something uses it."""
    img = service().remove_image(ref)
    emit(as_json, _image_info(img), f"removed {img.id[:12]} ({img.name})")


@main.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be repaired.")
@json_option
def gc(dry_run, as_json):
    """Reconcile the state with reality: remove what crashed operations left behind."""
    done = service(reconcile=False).reconcile(dry_run=dry_run)
    emit(as_json, {"dry_run": dry_run, "actions": done},
          "\n".join(done) if done else "nothing to repair")


@main.group()
def image():
    """Inspect or browse images."""


@image.command("inspect")
@click.argument("ref", shell_complete=complete_images)
@json_option
def image_inspect(ref, as_json):
    """Show an image's manifest (REF: a store id/name, or an .aimg file, verified first).

    The output is JSON either way; --json prints it on one line."""
    data = service().inspect_image(ref)
    click.echo(json.dumps(data, sort_keys=True) if as_json else json.dumps(data, indent=1, sort_keys=True))


@image.command("mount")
@click.argument("ref", shell_complete=complete_images)
@click.argument("directory", type=click.Path(file_okay=False))
@json_option
def image_mount(ref, directory, as_json):
    """Browse an image read-only at DIRECTORY (with its parent layers merged), no container needed.

    REF is an .aimg file or a stored image; unmount with `appcontainers image umount DIRECTORY`."""
    files = service().mount_image(ref, directory)
    emit(as_json, {"ref": ref, "directory": directory, "layers": files},
          f"{ref} mounted at {directory} ({len(files)} layer{'s' if len(files) > 1 else ''})")


@image.command("umount")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@json_option
def image_umount(directory, as_json):
    """Unmount an image mounted with `image mount`."""
    service(reconcile=False).unmount_image(directory)
    emit(as_json, {"directory": directory, "unmounted": True}, f"unmounted {directory}")


@main.command()
@click.argument("name", shell_complete=complete_containers)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records.")
@click.option("--since", type=click.IntRange(min=0), default=0, help="Start at this log offset.")
@click.option("-t", "--timestamps", is_flag=True, help="Start each line with the time it was logged (UTC).")
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N records (then follow, with -f).")
@json_option
def logs(name, follow, since, timestamps, tail, as_json):
    """Print a container's command output and exits, recorded by its agent.

    Lines are tagged with the command's text where the log records it, else with its id."""
    c = service().get(name)
    show = _LogPrinter(as_json, timestamps)
    if tail is not None:
        records = list(c.log_records(since=since))
        for rec in records:  # every record is read, so the command texts are known for the tail
            show.learn(rec)
        for rec in records[len(records) - tail:]:
            show(rec)
        since = records[-1].offset if records else since
        if not follow:
            return
    for rec in c.log_records(since=since, follow=follow):
        show(rec)


class _LogPrinter:
    """Prints log records: JSON lines, or text tagged with the command (its text when known)."""

    def __init__(self, as_json: bool, timestamps: bool):
        self.as_json, self.timestamps = as_json, timestamps
        self.commands: dict[str, str] = {}

    def learn(self, rec) -> None:
        """Remember the command text of a record that carries one (shell or argv)."""
        detail = rec.detail
        text = detail.get("shell") or (" ".join(map(str, detail["argv"])) if isinstance(detail.get("argv"), list)
                                       else None)
        if text and rec.command_id:
            self.commands[rec.command_id] = str(text)

    def _tag(self, rec) -> str:
        self.learn(rec)
        tag = self.commands.get(rec.command_id or "", rec.command_id)
        if self.timestamps and isinstance(rec.raw.get("ts"), (int, float)):
            import datetime

            when = datetime.datetime.fromtimestamp(rec.raw["ts"], datetime.timezone.utc)
            return f"{when.isoformat(timespec='milliseconds').replace('+00:00', 'Z')} [{tag}]"
        return f"[{tag}]"

    def __call__(self, rec) -> None:
        if self.as_json:
            click.echo(json.dumps(rec.to_dict(), sort_keys=True))
        elif rec.is_output:
            out = sys.stdout if rec.stream == "stdout" else sys.stderr
            out.write(f"{self._tag(rec)} {rec.text}" + ("" if rec.text.endswith("\n") else "\n"))
            out.flush()
        elif rec.is_lifecycle:
            click.echo(f"{self._tag(rec)} {rec.kind} {json.dumps(rec.detail, sort_keys=True)}")


@main.command()
@json_option
def events(as_json):
    """Stream events from every container (started, stopped, command exits) until Ctrl-C.

    Each event is one JSON object per line (--json is accepted and prints the same)."""
    for event in service().events():
        click.echo(json.dumps(event, sort_keys=True))
        sys.stdout.flush()


@main.group()
def base():
    """Base images."""


@base.command("ls")
@json_option
def base_ls(as_json):
    """List base images."""
    svc = service()
    _list_images(svc, svc.list_bases(), as_json)


@base.command("build")
@click.argument("kind", type=click.Choice(["debian"]))
@click.option("--suite", default="bookworm", show_default=True, help="The Debian release.")
@click.option("--include", multiple=True, metavar="PKG,...",
              help="Extra packages, comma-separated; may be repeated.")
@click.option("--name", help="The base's name (default: debian-SUITE).")
@click.option("--force", is_flag=True, help="Rebuild even if a base of the same inputs exists.")
@json_option
def base_build(kind, suite, include, name, force, as_json):
    """Build a base image: debian (mmdebstrap from the mirror this host's apt uses)."""
    import time

    start = time.monotonic()

    def progress(text):
        click.echo(f"[{time.monotonic() - start:5.1f}s] {text}", err=True)

    img = service().build_base(kind=kind, suite=suite, include=include, name=name, force=force,
                                progress=progress)
    emit(as_json, _image_info(img), f"{img.id[:12]}  {img.name}")


@base.command("rm")
@click.argument("name")
@json_option
def base_rm(name, as_json):
    """Remove base image NAME; refused while a container or image uses it."""
    removed = service().remove_base(name)
    emit(as_json, [_image_info(i) for i in removed],
          "\n".join(f"removed {i.id[:12]} ({i.name})" for i in removed))


from . import cli_exec, cli_inspect  # noqa: E402

cli_inspect.register(main)  # cp, inspect, stats
cli_exec.register(main)  # kill, shell
from . import cli_registry  # noqa: E402
cli_registry.register(main)  # push, pull, trust
__import__(f"{__package__}.cli_oci", fromlist=["register"]).register(main)  # import (OCI)
from . import cli_export  # noqa: E402
cli_export.register(main)  # export
from . import cli_fleet  # noqa: E402  (fleet: hosts on Ray, docs/fleet.md)
cli_fleet.register(main)

if __name__ == "__main__":
    main()
