"""The in-container agent (appcontainers-tools): the container's init.

It runs the startup commands from agent.json and the commands the host sends over ZeroMQ
(ipc sockets in a directory the host bind-mounts), streams their output lines and exit
codes back, and logs everything to a bounded JSON-lines file. See docs/agent.md.

Self-contained on purpose: only the stdlib, zmq and relative imports, because the package is
copied into images as `appcontainers_agent` and run with `python3 -m appcontainers_agent`.
The host side shares `protocol` (the message schema and its builders), `logfile` (the log
reader), `lines` (the one line splitter) and `retry` (the one wait/retry loop): helpers both
sides need live here, since this package may import nothing from the rest of appcontainers.
"""
