"""`appcontainers fleet ...`: the fleet of hosts on a Ray cluster (docs/fleet.md).

Each command connects to the cluster (--address, or APPCONTAINERS_FLEET_ADDRESS, default
"auto": the cluster this machine's Ray node belongs to), makes one fleet call and prints.
Tests give the fleet through the context: ctx.obj.fleet(address) if the object has one."""
from __future__ import annotations

import sys

import click

from .cli_common import emit, human_size, json_option


def _fleet():
    ctx = click.get_current_context()
    address = ctx.find_root().meta.get("appcontainers.fleet.address")
    make = getattr(ctx.obj, "fleet", None)
    if make is not None:
        return make(address)
    from .. import fleet

    return fleet.connect(address)


@click.group()
@click.option("--address", envvar="APPCONTAINERS_FLEET_ADDRESS", default="auto", show_default=True,
              help="The Ray cluster: HEAD_IP:PORT of its head, or auto (this node's cluster).")
@click.pass_context
def fleet(ctx, address):
    """Many hosts as one, on a Ray cluster: hosts, containers anywhere, jobs spread over them."""
    ctx.find_root().meta["appcontainers.fleet.address"] = address


def _host_row(h: dict) -> str:
    used = f"{h.get('containers', 0)}/{h.get('max_containers', 0)}"
    return (f"{h['name']:<12} {'up' if h['alive'] else 'LOST':<5} {h['subnet']:<18} {used:<9} "
            f"{human_size(h.get('memory_free')):<8} {h.get('cpus', '-'):<4} {h.get('load', 0):.2f}")


@fleet.command()
@json_option
def hosts(as_json):
    """The hosts, alive or lost, with their subnet and free capacity."""
    rows = _fleet().hosts()
    head = f"{'HOST':<12} {'STATE':<5} {'SUBNET':<18} {'USED':<9} {'MEMFREE':<8} {'CPUS':<4} LOAD"
    emit(as_json, rows, "\n".join([head, *(_host_row(h) for h in rows)]))


@fleet.command("ls")
@json_option
def ls_(as_json):
    """Every container of every host; a lost host's show as lost."""
    rows = _fleet().ls()
    head = f"{'HOST':<12} {'NAME':<16} {'STATE':<9} {'IP':<15} {'EPHEMERAL':<9} IMAGE"
    lines = [f"{c['host']:<12} {c['name']:<16} {c['state']:<9} {c['ip']:<15} "
             f"{'yes' if c.get('ephemeral') else 'no':<9} {str(c.get('image', ''))[:12]}" for c in rows]
    emit(as_json, rows, "\n".join([head, *lines]))


@fleet.command(context_settings={"ignore_unknown_options": True})
@click.option("--image", help="An image id (from fleet push or a save) or a base name; default: the default base.")
@click.option("--host", help="The host to run it on first (default: the one with most room).")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Times the job runs again elsewhere if its host dies.")
@click.option("--timeout", type=float, help="Seconds before the command is killed.")
@json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(image, host, retries, timeout, as_json, command):
    """Run COMMAND once in an ephemeral container on some host; exits with its exit code."""
    cmd = command[0] if len(command) == 1 else list(command)
    r = _fleet().run(image, cmd, host=host, retries=retries, timeout=timeout)
    if as_json:
        emit(True, {"host": r.host, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                    "attempts": r.attempts, "error": r.error})
    else:
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        if r.error:
            click.echo(f"appcontainers: error: {r.error}", err=True)
    from .run_session import exit_status

    sys.exit(1 if r.exit_code is None else exit_status(r.exit_code))


@fleet.command()
@click.option("--image", help="An image id or a base name; default: the default base.")
@click.option("--host", help="The host (default: the one with most room).")
@click.option("--name", help="Container name (random if omitted).")
@click.option("--memory", help="Memory limit, e.g. 256M (placement counts it).")
@click.option("--cpus", type=float, help="CPU limit in cores.")
@click.option("--ephemeral", is_flag=True, help="Writes go to a throw-away overlay; removed at stop.")
@json_option
def provision(image, host, name, memory, cpus, ephemeral, as_json):
    """A new container on a host with room."""
    opts = {k: v for k, v in (("memory", memory), ("cpus", cpus)) if v is not None}
    c = _fleet().provision(image, host=host, name=name, ephemeral=ephemeral, **opts)
    info = c.info()
    emit(as_json, info, f"{c.host}/{c.name} {info['ip']} {info['mac']}")


@fleet.command()
@click.argument("refs", nargs=-1, required=True)
def rm(refs):
    """Destroy containers by HOST/NAME (or NAME, if one host has it)."""
    f = _fleet()
    for ref in refs:
        f.rm(ref)
        click.echo(f"removed {ref}")


@fleet.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def push(path):
    """Make the .aimg at PATH available to every host; prints its id."""
    click.echo(_fleet().push_image(path))


@fleet.command()
@click.option("--registry", help="Switch to a registry HOST:PORT[/prefix].")
@click.option("--tls-verify", type=click.BOOL, default=True, show_default=True,
              help="Verify the registry's TLS certificate (false: self-signed, or plain HTTP).")
@click.option("--image-dir", help="Switch to a directory every host sees.")
@json_option
def images(registry, tls_verify, image_dir, as_json):
    """How the fleet's images travel; --registry or --image-dir switches it (images on hosts stay)."""
    f = _fleet()
    if registry is not None or image_dir is not None:
        f.use_images(registry=registry, image_dir=image_dir, tls_verify=tls_verify)
    spec = f.images()
    from ..fleet.images import describe

    emit(as_json, spec, "none yet" if spec is None else describe(spec))


@fleet.command()
@click.option("--name", required=True, help="This host's name: its Ray node has the resource appcontainers-host-NAME.")
@click.option("--root", required=True, help="This host's data root.")
@click.option("--bridge", required=True, help="This host's bridge.")
@click.option("--subnet", help="This host's subnet (default: a free /24 of the fleet range, claimed).")
@click.option("--registry", help="How the fleet's images travel: a registry HOST:PORT[/prefix] (the first join's).")
@click.option("--tls-verify", type=click.BOOL, default=True, show_default=True,
              help="Verify the registry's TLS certificate (false: self-signed, or plain HTTP).")
@click.option("--image-dir", help="Or a directory every host sees (one machine, NFS); the first join's.")
@click.option("--fleet-range", help="The range hosts' subnets come from (the first join's; default 10.160.0.0/14).")
@click.option("--max-containers", type=click.IntRange(min=1), help="Containers this host takes at most.")
@json_option
def join(name, root, bridge, subnet, registry, tls_verify, image_dir, fleet_range, max_containers, as_json):
    """Make this machine's Ray node a host of the fleet; returns once it is up."""
    from .. import fleet as fleet_api

    address = click.get_current_context().find_root().meta.get("appcontainers.fleet.address")
    record = fleet_api.join(address, name, root, bridge, subnet, registry=registry, tls_verify=tls_verify,
                            image_dir=image_dir, fleet_range=fleet_range, max_containers=max_containers)
    emit(as_json, record, f"host {name} joined: subnet {record['subnet']}, bridge {bridge}, root {root}")


def register(group: click.Group) -> None:
    group.add_command(fleet)
