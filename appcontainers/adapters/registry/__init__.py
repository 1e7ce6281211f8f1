"""OCI registries and signing: the distribution API client (client.py, auth.py) and the
ed25519 keys and signature files (signing.py). Imported only when a push, pull or signature
needs them (entrypoints.api wires them lazily)."""
