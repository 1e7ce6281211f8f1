"""push, pull and trust: images through an OCI registry, and signing keys (docs/registry.md).

cli.py adds them to its group with register(main)."""
from __future__ import annotations

import sys
from typing import Any

import click

from .cli_common import complete_images, emit, json_option, service

TLS_HELP = ("false: the registry may be plain HTTP or have a self-signed certificate "
            "(default true: https, verified).")


class _Bars:
    """One progress bar per transfer on stderr, only when it is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.label: str | None = None
        self.bar: Any = None
        self.done = 0

    def __call__(self, label: str, done: int, total: int) -> None:
        if label != self.label:
            self.close()
            self.label, self.done = label, 0
            self.bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            self.bar.__enter__()
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def progress(self):
        return self if self.enabled else None


@click.command()
@click.argument("image", shell_complete=complete_images)
@click.argument("ref")
@click.option("--sign", "key", metavar="KEY", help="Sign with this private key (a file, or a `trust keygen` name).")
@click.option("--tls-verify", type=click.BOOL, default=True, show_default=True, help=TLS_HELP)
@json_option
def push(image, ref, key, tls_verify, as_json):
    """Push stored image IMAGE (id, prefix or name) and its parents to REF (HOST[:PORT]/REPO[:TAG])."""
    bars = _Bars(not as_json)
    try:
        result = service().push_image(image, ref, sign=key, tls_verify=tls_verify, progress=bars.progress())
    finally:
        bars.close()
    emit(as_json, {"ref": result.ref, "digest": result.digest, "id": result.image.id, "uploaded": result.uploaded,
                   "skipped": result.skipped, "signatures": result.signatures},
         f"{result.ref}@{result.digest} {result.image.id[:12]} ({result.uploaded} layer(s) sent, "
         f"{result.skipped} already there{', signed' if result.signatures else ''})")


@click.command()
@click.argument("ref")
@click.option("--name", help="Name the pulled image this (default: its own name).")
@click.option("--tls-verify", type=click.BOOL, default=True, show_default=True, help=TLS_HELP)
@click.option("--allow-unsigned-import", is_flag=True,
              help="Under a key trust policy, still import an ordinary (unsigned) container image.")
@json_option
def pull(ref, name, tls_verify, allow_unsigned_import, as_json):
    """Pull REF (HOST[:PORT]/REPO[:TAG] or ...@sha256:DIGEST) into the image store."""
    bars = _Bars(not as_json)
    try:
        img = service().pull_image(ref, name=name, tls_verify=tls_verify,
                                   allow_unsigned_import=allow_unsigned_import, progress=bars.progress())
    finally:
        bars.close()
    emit(as_json, {"id": img.id, "name": img.name, "kind": img.kind, "parent": img.parent},
         f"{img.id[:12]}  {img.name}")


@click.group()
def trust():
    """Signing keys for push --sign and save --sign; the policy is the trust setting
    (APPCONTAINERS_TRUST: any, or public key files separated by commas)."""


@trust.command("keygen")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Write NAME.key and NAME.pub here (default: the data root's keys/).")
@json_option
def keygen(name, directory, as_json):
    """Make an ed25519 key pair NAME.key (private, 0600) and NAME.pub."""
    made = service().trust_keygen(name, directory)
    emit(as_json, made, f"{made['key']}\nprivate: {made['private']}\npublic:  {made['public']}")


@trust.command("policy")
@json_option
def policy(as_json):
    """Print the trust policy in force."""
    text = service(reconcile=False).settings.trust
    emit(as_json, {"trust": text}, text)


def register(main: click.Group) -> None:
    for command in (push, pull, trust):
        main.add_command(command)
