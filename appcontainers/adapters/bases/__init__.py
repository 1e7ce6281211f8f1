"""Base image builders: the offline busybox base and the mmdebstrap Debian base."""
