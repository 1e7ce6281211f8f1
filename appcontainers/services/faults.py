"""Named steps of multi-step operations, where the fault-injection tests kill the process.

APPCONTAINERS_FAULT=<step> makes the process SIGKILL itself on reaching that step,
as a crash would; reconcile must then leave no trace. Unset, a checkpoint costs a dict lookup.
"""
from __future__ import annotations

import os
import signal

STEPS = (
    "provision.reserved", "provision.materialized", "mount.done",
    "load.staged", "load.reserved", "load.imported",
    "save.recorded", "save.packed",
    "import.fetched", "import.layer", "import.converted",
    "destroy.marked", "destroy.stopped", "destroy.unmounted",
    "pull.staged",
)


def checkpoint(step: str) -> None:
    if os.environ.get("APPCONTAINERS_FAULT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
