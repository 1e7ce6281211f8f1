"""Driving LXC: the lxc-* tools and the Tempita skeletons of each container's config."""
