"""What a command run in a container returns."""
from __future__ import annotations

import attrs


@attrs.frozen
class RunResult:
    exit_code: int
    stdout_bytes: bytes = attrs.field(alias="stdout")
    stderr_bytes: bytes = attrs.field(alias="stderr")

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode(errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0
