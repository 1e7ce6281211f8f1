"""`appcontainers-agent [--dir DIR]`, also run as `python3 -m appcontainers_agent` in images."""
from __future__ import annotations

import argparse
import os
import sys
import traceback

DEFAULT_DIR = "/run/appcontainers"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="appcontainers-agent",
        description="The appcontainers in-container agent (init): runs the startup commands and the "
                    "commands the host sends over ZeroMQ, and logs their output.")
    parser.add_argument("--dir", default=os.environ.get("APPCONTAINERS_AGENT_DIR") or DEFAULT_DIR,
                        help="directory shared with the host for sockets, agent.json and the log "
                             "(default: $APPCONTAINERS_AGENT_DIR or %(default)s)")
    parser.add_argument("--stderr", help="append the agent's own errors to this file (an init started "
                                          "without a shell cannot redirect them)")
    args = parser.parse_args(argv)
    if args.stderr:
        fd = os.open(args.stderr, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    from .server import serve  # imports zmq: keep --help fast

    try:
        code = serve(os.path.abspath(args.dir))
    except Exception as e:  # noqa: BLE001 -- as init, say why before the container ends
        traceback.print_exc()
        print(f"appcontainers-agent: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
