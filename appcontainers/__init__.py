"""appcontainers: build, run and monitor LXC app containers and their images.

    import appcontainers
    svc = appcontainers.setup_service()
    c = svc.provision()
"""
import logging

from .domain.exceptions import AppContainersError

# The library logs to "appcontainers.*" and leaves the output to the application (the CLI: --debug,
# APPCONTAINERS_LOG); without this, Python would print its warnings to stderr when nobody configured it.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["setup_service", "AppContainersError"]


def setup_service(**settings):
    """The Service with real adapters; keyword settings override the defaults (see Settings)."""
    from .entrypoints.api import setup_service as _setup

    return _setup(**settings)
