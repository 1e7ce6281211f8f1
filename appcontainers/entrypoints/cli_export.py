"""`appcontainers export`: an image or a container's tree as an OCI image (docs/oci.md, "Export").

cli.py adds it to its group with register(main), as cli_inspect's."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

import click

from .cli_common import complete_images, emit, json_option, service

FORMATS = ("oci", "oci-archive", "docker-archive")


@contextlib.contextmanager
def progress_bar(label: str, shown: bool) -> Iterator[Callable[[int], None] | None]:
    """progress(percent) drawing a bar on stderr, or None when not shown."""
    if not shown:
        yield None
        return
    with click.progressbar(length=100, label=label, file=sys.stderr) as bar:
        done = [0]

        def progress(pct: int) -> None:
            if pct > done[0]:
                bar.update(pct - done[0])
                done[0] = pct

        yield progress


@click.command()
@click.argument("ref", metavar="IMAGE|NAME", shell_complete=complete_images)
@click.argument("dest")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="oci", show_default=True,
              help="oci: an OCI image layout directory; oci-archive: a tar of one; docker-archive: "
                   "what `docker save` writes (`docker load` / `podman load` take it).")
@click.option("--tag", default="latest", show_default=True,
              help="The image's tag there (the layout's ref name; NAME:TAG in a docker archive).")
@json_option
def export(ref, dest, fmt, tag, as_json):
    """Export image IMAGE (id, id prefix or name) or container NAME (its current tree: its image
    with its changes as the top layer; a container's name comes first) to DEST as an OCI image,
    one layer per image layer.

    \b
      appcontainers export web ./web-oci                       an OCI layout directory
      appcontainers export web web.tar --format docker-archive  then: docker load -i web.tar
    Nothing is left at DEST on failure. A progress bar shows on stderr when it is a terminal."""
    svc = service()
    with progress_bar(f"exporting {ref}", not as_json and sys.stderr.isatty()) as progress:
        result = svc.export_image(ref, dest, format=fmt, tag=tag, progress=progress)
    digest = result.get("manifest") or result["config"]
    emit(as_json, result, f"{result['dest']} {digest}")


def register(group: click.Group) -> None:
    group.add_command(export)
