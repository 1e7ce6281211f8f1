"""Hypothesis strategies for the domain models: every value they draw is valid."""
from __future__ import annotations

import ipaddress

import attrs
from hypothesis import strategies as st

from appcontainers.domain.image import KINDS, Image, Manifest, RunConfig
from appcontainers.domain.network import AddressPool
from appcontainers.domain.capabilities import KNOWN as CAPS_KNOWN
from appcontainers.domain.reservation import NAME_MAX, PIDS_MAX, STATUSES, Reservation
from appcontainers.domain.state import State

# JSON-safe text: no lone surrogates, no NUL (refused in commands and environment values).
_text_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
safe_text = st.text(_text_chars, max_size=30)

names = st.from_regex(rf"[a-z0-9]([a-z0-9-]{{0,{NAME_MAX - 2}}}[a-z0-9])?", fullmatch=True)
image_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True).filter(
    lambda n: ".." not in n)
image_ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
octets = st.integers(0, 255)
macs = st.lists(octets, min_size=6, max_size=6).map(lambda os_: ":".join(f"{o:02x}" for o in os_))
ipv4_addresses = st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i)))
commands = st.lists(safe_text.filter(lambda c: c.strip()), max_size=4)
finite_floats = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)


@st.composite
def networks(draw, min_prefix: int = 16, max_prefix: int = 30) -> str:
    """An IPv4 network in canonical form, host bits clear, /min_prefix to /max_prefix."""
    prefix = draw(st.integers(min_prefix, max_prefix))
    base = draw(st.integers(0, 2**32 - 1)) & ~((1 << (32 - prefix)) - 1) & 0xFFFFFFFF
    return f"{ipaddress.IPv4Address(base)}/{prefix}"


@st.composite
def mac_prefixes(draw) -> str:
    """A valid MAC prefix: 1 to 5 octets, the first one even (unicast)."""
    first = draw(st.integers(0, 127)) * 2
    rest = draw(st.lists(octets, max_size=4))
    return ":".join(f"{o:02x}" for o in [first, *rest])


@st.composite
def address_pools(draw, network=None, max_names: int = 20) -> AddressPool:
    """A pool with some allocations and some gaps left by releases."""
    pool = AddressPool(draw(network if network is not None else networks(16, 28)))
    wanted = draw(st.lists(names, max_size=min(max_names, pool.capacity), unique=True))
    for n in wanted:
        pool.allocate(n)
    if wanted:
        for n in draw(st.lists(st.sampled_from(wanted), unique=True)):
            pool.release(n)
    return pool


env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
abs_paths = st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,10}", fullmatch=True).filter(
    lambda p: p not in (".", "..")), min_size=1, max_size=4).map(lambda ps: "/" + "/".join(ps))

init_args = st.from_regex(r"[A-Za-z0-9_.+@/=:,-]{1,12}", fullmatch=True)

run_configs = st.builds(
    RunConfig,
    env=st.dictionaries(env_names, safe_text, max_size=4),
    entrypoint=st.lists(safe_text, max_size=3),
    cmd=st.lists(safe_text, max_size=3),
    workdir=st.just("") | abs_paths,
    user=st.sampled_from(["", "root", "1000", "1000:1000", "nobody:nogroup"]),
    exposed_ports=st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(["tcp", "udp", "sctp"])).map(
        lambda t: f"{t[0]}/{t[1]}"), max_size=3),
    labels=st.dictionaries(safe_text, safe_text, max_size=3),
)

manifests = st.builds(
    Manifest,
    name=image_names,
    created=finite_floats,
    parent=st.none() | image_ids,
    startup_commands=commands,
    environment=st.dictionaries(env_names, safe_text, max_size=4),
    host_binds=st.lists(abs_paths, max_size=3),
    base=st.none() | image_names,
    init=st.one_of(st.just([]), st.tuples(abs_paths, st.lists(init_args, max_size=2)).map(
        lambda t: [t[0], *t[1]])),
    diff_id=st.none() | image_ids.map(lambda h: "sha256:" + h),
    config=st.none() | run_configs,
    format_version=st.just(1),
)

images = st.builds(Image, id=image_ids, manifest=manifests, kind=st.sampled_from(KINDS),
                   origin=st.sampled_from([None, "import"]))

reservations = st.builds(
    Reservation,
    name=names,
    ip=ipv4_addresses,
    mac=macs,
    image=image_ids | image_names,
    ephemeral=st.booleans(),
    startup_commands=commands,
    created=finite_floats,
    status=st.sampled_from(STATUSES),
    mounter=st.sampled_from(("kernel", "fuse")),
    idmap=st.none() | st.just((100000, 65536)),
    caps_add=st.lists(st.sampled_from(sorted(CAPS_KNOWN)), max_size=4),
    pids=st.integers(1, PIDS_MAX),
)


@st.composite
def states(draw, max_containers: int = 8) -> State:
    """A consistent State: each reservation holds its pool address and a MAC of its own.

    The pool may also hold addresses with no reservation (an allocation not yet
    turned into a container), as after a crash mid-provision.
    """
    pool = draw(address_pools(networks(16, 29), max_names=max_containers))
    state = State(pool=pool)
    held = sorted(pool.allocations())
    chosen = draw(st.lists(st.sampled_from(held), unique=True)) if held else []
    chosen_macs = draw(st.lists(macs, min_size=len(chosen), max_size=len(chosen), unique=True))
    for name, mac in zip(chosen, chosen_macs):
        state.add(attrs.evolve(draw(reservations), name=name, ip=pool.address_of(name), mac=mac))
    for img in draw(st.lists(images, max_size=3, unique_by=lambda i: i.id)):
        state.images[img.id] = img
    return state
