"""Adapters: the ports implemented with real tools (lxc-*, mount, mksquashfs, FUSE, ZeroMQ, files)."""
