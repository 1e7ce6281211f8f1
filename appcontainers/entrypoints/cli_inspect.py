"""The commands that move files and look inside containers: cp, inspect, stats.

cli.py adds them to its group with register(main) (a function, not import-time decoration: run as
`python -m appcontainers.entrypoints.cli`, that group is __main__'s, not this import's)."""
from __future__ import annotations

import re

import click

from .cli_common import complete_containers, complete_images, emit, human_size, json_option, service

_REMOTE = re.compile(r"^([a-z0-9][a-z0-9-]*):(.*)$")


def _split(arg: str) -> tuple[str | None, str]:
    """("NAME", "/path") for NAME:/path, (None, arg) for a host path ('./a:b' has a '/' first)."""
    m = _REMOTE.match(arg)
    return (m.group(1), m.group(2)) if m else (None, arg)


@click.command()
@click.argument("src", shell_complete=complete_containers)
@click.argument("dest", shell_complete=complete_containers)
@json_option
def cp(src, dest, as_json):
    """Copy files or directories between a container and the host, like docker cp.

    \b
      appcontainers cp web:/etc/hosts ./hosts     out of container web
      appcontainers cp ./site web:/srv            in (into /srv/site if /srv is a directory)
      appcontainers cp web:/srv - > srv.tar       a tar stream of it on stdout
      appcontainers cp - web:/srv < site.tar       a tar stream from stdin, unpacked into /srv
    Directories are copied recursively with their modes; a symlink inside the container is
    copied as a symlink, never followed. Host copies belong to you. A tar stream coming in is
    checked member by member like load-archive."""
    (src_name, src_path), (dest_name, dest_path) = _split(src), _split(dest)
    if (src_name is None) == (dest_name is None):
        raise click.UsageError("give exactly one side as NAME:PATH (a container path)")
    if "-" in (src_path, dest_path):
        _cp_tar_stream(src_name, src_path, dest_name, dest_path, as_json)
    elif src_name is not None:
        written = service().get(src_name).copy_out(src_path, dest_path)
        data = {"name": src_name, "from": src_path, "to": written, "direction": "out"}
        emit(as_json, data, f"{src_name}:{src_path} -> {written}")
    else:
        written = service().get(dest_name).copy_in(src_path, dest_path)
        data = {"name": dest_name, "from": src_path, "to": written, "direction": "in"}
        emit(as_json, data, f"{src_path} -> {dest_name}:{written}")


def _complete_both(ctx, param, incomplete):
    return complete_containers(ctx, param, incomplete) + complete_images(ctx, param, incomplete)


def _cp_tar_stream(src_name, src_path, dest_name, dest_path, as_json) -> None:
    """cp NAME:PATH - (a tar of PATH on stdout) or cp - NAME:DIR (a tar from stdin into DIR)."""
    import os
    import shutil
    import sys
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="appcontainers-cp-") as tmp:
        if src_name is not None:
            written = service().get(src_name).copy_out(src_path, tmp)
            with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tf:
                tf.add(written, arcname=os.path.basename(written))
            sys.stdout.buffer.flush()
            return
        archive = os.path.join(tmp, "stdin.tar")
        with open(archive, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f)
        n = service().get(dest_name).load_archive(archive, dest_path)
        emit(as_json, {"name": dest_name, "from": "-", "to": dest_path, "direction": "in", "members": n},
             f"- -> {dest_name}:{dest_path} ({n} members)")


@click.command()
@click.argument("name", shell_complete=_complete_both)
@json_option
def inspect(name, as_json):
    """Show what is known of container NAME (address, image, limits, startup commands, state),
    or, if no container has that name, of the image NAME (as `image inspect`)."""
    from ..domain.exceptions import UnknownContainer

    svc = service()
    try:
        data = svc.inspect(name)
    except UnknownContainer:
        data = svc.inspect_image(name)
    if as_json:
        emit(True, data)
        return
    for key in sorted(data):
        click.echo(f"{key + ':':<18} {_show(data[key])}")


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


@click.command()
@click.argument("name", required=False, shell_complete=complete_containers)
@json_option
def stats(name, as_json):
    """Show the resource use of container NAME (default: every container): CPU time, memory,
    processes (from its cgroup; '-' when stopped) and the bytes its writable layer holds."""
    svc = service()
    rows = [svc.stats(name)] if name else [svc.stats(c.name) for c in svc.list_containers()]
    if as_json:
        emit(True, rows[0] if name else rows)
        return
    click.echo(f"{'NAME':<24} {'STATE':<9} {'CPU':>10} {'MEM':>8} {'PIDS':>5} {'DISK':>8}")
    for s in rows:
        cpu = "-" if s["cpu_seconds"] is None else f"{s['cpu_seconds']:.2f}s"
        pids = "-" if s["pids"] is None else s["pids"]
        click.echo(f"{s['name']:<24} {s['state']:<9} {cpu:>10} {human_size(s['memory_bytes']):>8} {pids:>5} "
                   f"{human_size(s['disk_bytes']):>8}")


def register(group: click.Group) -> None:
    for command in (cp, inspect, stats):
        group.add_command(command)
