"""Root filesystems: loop squashfs + overlayfs, squashfuse + fuse-overlayfs, raw directories."""
