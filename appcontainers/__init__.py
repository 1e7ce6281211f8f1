"""appcontainers: build, run and monitor LXC app containers and their images.

    import appcontainers
    svc = appcontainers.setup_service()
    c = svc.provision()
"""
from .domain.exceptions import AppContainersError

__all__ = ["setup_service", "AppContainersError"]


def setup_service(**settings):
    """The Service with real adapters; keyword settings override the defaults (see Settings)."""
    from .entrypoints.api import setup_service as _setup

    return _setup(**settings)
