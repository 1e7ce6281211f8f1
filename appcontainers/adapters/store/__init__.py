"""The state file (resources.json) under a lock, replaced atomically."""
