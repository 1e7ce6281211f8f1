"""The .aimg image file: mksquashfs/unsquashfs codec, a pure-Python squashfs reader, its FUSE view."""
