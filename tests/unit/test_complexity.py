"""No function in the package above radon's grade C (issue 16): a D is a function to split."""
from __future__ import annotations

import pathlib

from radon.complexity import cc_rank, cc_visit

import appcontainers

PACKAGE = pathlib.Path(appcontainers.__file__).parent


def test_no_function_above_grade_c():
    """radon cc -n D appcontainers prints nothing."""
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the whole package is read, not an empty glob
    worst = []
    for path in files:
        for block in cc_visit(path.read_text()):
            if cc_rank(block.complexity) > "C":
                worst.append(f"{path.relative_to(PACKAGE)}:{block.lineno} {block.name} "
                             f"{cc_rank(block.complexity)}({block.complexity})")
    assert not worst, "functions above grade C: " + ", ".join(worst)
