"""What the CLI's command modules share: the service from the context, printing, completion."""
from __future__ import annotations

import json

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")


def service(reconcile: bool = True):
    return click.get_current_context().obj(reconcile=reconcile)


def emit(as_json: bool, data, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
    else:
        click.echo(text if text is not None else data)


def error(message: str, kind: str, as_json: bool) -> None:
    """One error on stderr: a line of text, or {"error": ..., "type": ...} under --json."""
    from .cli_lean import error_text

    click.echo(error_text(message, kind, as_json), err=True)


def complete_containers(ctx, param, incomplete):
    """Container names from the state file (read only: completion runs without the lock or root)."""
    return [n for n in _state_keys("reservations") if n.startswith(incomplete)]


def complete_images(ctx, param, incomplete):
    """Image names and ids from the state file."""
    images = _state_keys("images", names=True)
    return sorted({n for n in images if n.startswith(incomplete)})


def _state_keys(section: str, names: bool = False) -> list[str]:
    from ..config import Settings

    try:
        with open(Settings.from_env().layout.resources) as f:
            data = json.load(f).get(section, {})
    except (OSError, ValueError, AttributeError):
        return []
    keys = sorted(data)
    if names:
        keys += [str(v.get("manifest", {}).get("name")) for v in data.values() if isinstance(v, dict)]
    return keys


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return "-"  # not reached
