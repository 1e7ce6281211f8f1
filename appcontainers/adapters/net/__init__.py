"""The host's network as the service uses it: its bridge, veths and nftables rules."""
from .hostnet import HostNetwork, bridge_plan

__all__ = ["HostNetwork", "bridge_plan"]
