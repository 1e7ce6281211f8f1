"""The default base carries the agent and pyzmq compiled, so a start imports them without compiling."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from appcontainers.adapters.bases import busybox_base


def test_agent_and_zmq_are_precompiled(tmp_path):
    """populate() leaves a valid .pyc (this interpreter's tag) next to every tool source."""
    rootfs = str(tmp_path / "rootfs")
    busybox_base.populate(rootfs, busybox_base.find_busybox(), busybox_base.python_runtime())
    tools = os.path.join(rootfs, busybox_base.TOOLS_DIR.lstrip("/"))
    sources = [os.path.join(d, f) for d, _, files in os.walk(tools) for f in files if f.endswith(".py")]
    assert any("/appcontainers_agent/" in s for s in sources) and any("/site/zmq/" in s for s in sources)
    missing = [s for s in sources if not os.path.exists(importlib.util.cache_from_source(s))]
    assert missing == []
    # Python itself finds them current: importing with writes forbidden compiles nothing new.
    before = {s: os.stat(importlib.util.cache_from_source(s)).st_mtime_ns for s in sources}
    env = {"PYTHONPATH": f"{tools}:{tools}/site", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONVERBOSE": "1"}
    proc = subprocess.run([sys.executable, "-S", "-c", "import appcontainers_agent.server"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    agent_lines = [line for line in proc.stderr.splitlines() if "appcontainers_agent" in line and "code object from" in line]
    assert agent_lines and all(".pyc" in line for line in agent_lines)
    assert {s: os.stat(importlib.util.cache_from_source(s)).st_mtime_ns for s in sources} == before
