"""agent.json: what the host tells the agent before it starts. Unknown or invalid keys are
reported and ignored, never fatal: the agent is init and must come up."""
from __future__ import annotations

import json
import os

DEFAULTS = {"startup_commands": [], "environment": {}, "log_max_bytes": 10 * 1024 * 1024, "hostname": None,
            "curve_secret_key": None, "default_command": None}
# Z85, the text form of a CURVE key: 40 characters of this alphabet.
Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _default_command_ok(v) -> bool:
    """{"argv": [str, ...], "cwd": str, "user": str (optional)}: the image's default command."""
    return (isinstance(v, dict) and isinstance(v.get("argv"), list) and bool(v["argv"])
            and all(isinstance(a, str) for a in v["argv"]) and isinstance(v.get("cwd", "/"), str)
            and isinstance(v.get("user", ""), str))


def parse_config(raw) -> tuple[dict, list[str]]:
    """agent.json's content as (settings with defaults, problems); bad keys are ignored."""
    config = {**DEFAULTS, "startup_commands": [], "environment": {}}
    if not isinstance(raw, dict):
        return config, ["agent.json is not a JSON object"]
    problems = []
    checks = {
        "startup_commands": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "environment": lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str)
                                                            for k, x in v.items()),
        "log_max_bytes": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "hostname": lambda v: isinstance(v, str),
        "curve_secret_key": lambda v: isinstance(v, str) and len(v) == 40 and set(v) <= Z85,
        "default_command": _default_command_ok,
    }
    for key, ok in checks.items():
        if key in raw:
            if ok(raw[key]):
                config[key] = raw[key]
            else:
                problems.append(f"agent.json: ignoring invalid {key}")
    if raw.get("v", 1) != 1:
        problems.append(f"agent.json: unknown version {raw.get('v')!r}, read as version 1")
    return config, problems


def load_config(run_dir: str) -> tuple[dict, list[str]]:
    try:
        with open(os.path.join(run_dir, "agent.json"), "rb") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raw = {}
    except (OSError, ValueError) as e:
        config, _ = parse_config({})
        return config, [f"agent.json unreadable: {e}"]
    return parse_config(raw)
