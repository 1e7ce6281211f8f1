"""The OCI commands: import (this file); export, push and pull join it.

cli.py adds them to its group with register(main)."""
from __future__ import annotations

import sys

import click

from .cli_common import emit, json_option, service


def _bar(label: str):
    """A progress bar on stderr when it is a terminal; (context, progress callback)."""
    if not sys.stderr.isatty():
        return None
    return click.progressbar(length=100, label=label, file=sys.stderr)


def _run_with_bar(label: str, call):
    bar = _bar(label)
    if bar is None:
        return call(None)
    with bar:
        done = [0]

        def progress(pct: int) -> None:
            if int(pct) > done[0]:
                bar.update(int(pct) - done[0])
                done[0] = int(pct)
        return call(progress)


@click.command("import")
@click.argument("source")
@click.option("--name", help="The image's name (default: from the source).")
@click.option("--tls-verify", type=click.BOOL, default=True, show_default=True,
              help="Verify the registry's TLS certificate (docker://; false for a plain-HTTP local registry).")
@click.option("--allow-devices", is_flag=True, help="Keep device nodes and FIFOs the layers hold (refused by default).")
@click.option("--allow-setuid", is_flag=True, help="Keep setuid/setgid files the layers hold (refused by default).")
@click.option("--allow-unsigned", is_flag=True,
              help="Import under a trust policy of keys (an OCI image carries no signature of ours).")
@json_option
def import_(source, name, tls_verify, allow_devices, allow_setuid, allow_unsigned, as_json):
    """Import an OCI image as layered images (one per OCI layer).

    \b
    SOURCE is one of:
      oci:DIR[:TAG]              an OCI image layout directory (read in place)
      oci-archive:FILE[:TAG]     a tar of one (podman save --format oci-archive)
      docker-archive:FILE        docker save / podman save output
      docker://HOST[:PORT]/NAME:TAG   a registry, through skopeo (registries.conf, credentials)
      FILE                       a plain rootfs tar (docker export), plain, gzip or zstd
    """
    svc = service()
    img = _run_with_bar(f"importing {source}", lambda progress: svc.import_image(
        source, name, progress, tls_verify=tls_verify, allow_devices=allow_devices, allow_setuid=allow_setuid,
        allow_unsigned=allow_unsigned))
    chain = [img.id]
    images = {i.id: i for i in svc.images.list(layers=True)}
    parent = img.parent
    while parent in images:
        chain.append(parent)
        parent = images[parent].parent
    info = {"id": img.id, "name": img.name, "kind": img.kind, "parent": img.parent,
            "layers": len(chain), "config": None if img.manifest.config is None else img.manifest.config.to_dict()}
    emit(as_json, info, f"{img.id} {img.name} ({len(chain)} layers)")


def register(group: click.Group) -> None:
    group.add_command(import_)
