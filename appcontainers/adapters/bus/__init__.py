"""ZeroMQ: the host side of each container's agent."""
