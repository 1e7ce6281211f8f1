"""The README's Python example runs top to bottom against a real service (its own data root
settings substituted for the defaults; the Debian builds only in the slow run)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def python_block() -> str:
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert blocks, "the README has no Python example"
    return blocks[0]


def _program(settings: dict, with_debian: bool) -> str:
    code = python_block()
    assert "appcontainers.setup_service()" in code
    code = code.replace("appcontainers.setup_service()", f"appcontainers.setup_service(**{settings!r})")
    if not with_debian:  # the two base builds and the container on them: minutes and a mirror
        lines = code.splitlines()
        kept = [ln for ln in lines if "debian" not in ln]
        assert len(lines) - len(kept) == 3, "the README's Debian lines changed: update this test"
        code = "\n".join(kept)
    return code + "\nprint('README-OK')\n"


def _inputs(cwd) -> None:
    (cwd / "app").mkdir()
    (cwd / "app" / "main.sh").write_text("echo app\n")
    with tarfile.open(cwd / "app.tar.gz", "w:gz") as tf:
        tf.add(cwd / "app", arcname="app")
    (cwd / "big.bin").write_bytes(os.urandom(1 << 20))
    (cwd / "site").mkdir()
    (cwd / "site" / "index.html").write_text("<h1>hi</h1>\n")


def _run(settings, svc, tmp_path, with_debian: bool) -> None:
    _inputs(tmp_path)
    before = {c.name for c in svc.list_containers()}
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        proc = subprocess.run([sys.executable, "-c", _program(settings, with_debian)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=1800 if with_debian else 300,
                              env={**os.environ, "PYTHONPATH": repo})
        assert proc.returncode == 0 and "README-OK" in proc.stdout, proc.stderr[-3000:]
        assert (tmp_path / "site-copy" / "index.html").read_text() == "<h1>hi</h1>\n"
        made = {c.name for c in svc.list_containers()} - before
        assert len(made) == (1 if with_debian else 0), made  # the example keeps its last container
    finally:
        for c in svc.list_containers():
            if c.name not in before:
                c.destroy()


def test_readme_example_runs(settings, svc, tmp_path):
    """The README's Python block runs to the end (Debian lines left out), copies files both ways
    and destroys what it made."""
    _run(settings, svc, tmp_path, with_debian=False)


# The whole block, Debian builds included, is run by test_debian_base.py while its Debian base is
# there (the README's first build is then the cached one): run_readme_with_debian below.


def run_readme_with_debian(settings, svc, tmp_path) -> None:
    _run(settings, svc, tmp_path, with_debian=True)
