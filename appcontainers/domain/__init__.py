"""Pure models and ports: no I/O, no subprocess, no sockets."""
