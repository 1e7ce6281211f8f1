"""The ports as documented and used: no method of Mounters without a caller, no port named in
docs/architecture.md that domain/ports.py does not define."""
from __future__ import annotations

import inspect
import pathlib
import re

import appcontainers
from appcontainers.domain import ports
from appcontainers.services.ports import Mounters

PACKAGE = pathlib.Path(appcontainers.__file__).parent
REPO = PACKAGE.parent


def _sources() -> str:
    """The package and its tests, but not services/ports.py (where Mounters is defined)."""
    paths = [p for p in sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "tests").rglob("*.py"))
             if p != PACKAGE / "services" / "ports.py"]
    assert len(paths) > 50
    return "\n".join(p.read_text() for p in paths)


class TestPorts:
    def test_every_mounters_method_has_a_caller(self):
        """Each public method of Mounters is called somewhere (a method no one calls is a dead port)."""
        text = _sources()
        methods = [n for n, _ in inspect.getmembers(Mounters, inspect.isfunction) if not n.startswith("_")]
        assert "by_name" in methods
        assert [m for m in methods if f".{m}(" not in text] == []

    def test_the_ports_table_names_only_real_ports(self):
        """Every Protocol name in the first column of architecture.md's ports table is in domain/ports.py."""
        doc = (REPO / "docs" / "architecture.md").read_text()
        table = doc.split("## Ports and their adapters", 1)[1].split("\n## ", 1)[0]
        rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
        names = {n for cell in rows for n in re.findall(r"`([A-Z][A-Za-z]+)`", cell)}
        assert {"RootfsMounter", "Binder", "ViewMounter", "ResourceRepository"} <= names
        assert sorted(n for n in names if not inspect.isclass(getattr(ports, n, None))) == []
