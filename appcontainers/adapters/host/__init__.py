"""The host itself: files, links, processes, and the one helper that runs external tools."""
