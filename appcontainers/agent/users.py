"""Who a command runs as: a user of the container's /etc/passwd (by name or uid), or uid:gid.

The agent is the container's init, so /etc/passwd and /etc/group are the container's own."""
from __future__ import annotations

import os
import stat
from typing import NamedTuple


class NoSuchUser(ValueError):
    """A user or group that is neither in the container's files nor a number."""


class User(NamedTuple):
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups (from /etc/group)
    name: str | None
    home: str


MAX_FILE = 4 << 20  # bytes of /etc/passwd or /etc/group read at most


def _entries(path: str) -> list[list[str]]:
    """The lines of a passwd/group file. The container owns it: a FIFO must not block the agent,
    nor a link to /dev/zero fill its memory; anything but a regular file counts as missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        raise NoSuchUser(f"{path} is larger than {MAX_FILE} bytes")
    text = data.decode("utf-8", "replace")
    return [line.split(":") for line in text.splitlines() if line.count(":") >= 3]


def _number(text: str, what: str) -> int:
    if not text.isdigit() or int(text) > 0xFFFFFFFE:
        raise NoSuchUser(f"no such {what}")
    return int(text)


def _passwd_entry(user: str, passwd: str) -> list[str] | None:
    for e in _entries(passwd):
        # A number is a uid only, a name a name only: a passwd line named "1000" with uid 0
        # must not turn -u 1000 into root.
        if len(e) >= 6 and (e[2] == user if user.isdigit() else e[0] == user):
            return e
    return None


def _group_id(group: str, group_file: str) -> int:
    for e in _entries(group_file):
        if e[0] == group:
            return _number(e[2], "group")
    return _number(group, "group")


def resolve(spec: str, passwd: str = "/etc/passwd", group_file: str = "/etc/group") -> User:
    """USER, UID, USER:GROUP or UID:GID as a User; NoSuchUser for a name that is not there."""
    user, _, group = spec.partition(":")
    entry = _passwd_entry(user, passwd)
    if entry is None:
        uid, gid, name, home = _number(user, "user"), _number(user, "user"), None, "/"
    else:
        uid, gid, name, home = _number(entry[2], "user"), _number(entry[3], "group"), entry[0], entry[5] or "/"
    if group:
        gid = _group_id(group, group_file)
    groups = tuple(sorted({_number(e[2], "group") for e in _entries(group_file)
                           if name and name in e[3].split(",") and e[2].isdigit()}))
    return User(uid, gid, groups, name, home)


def environment(u: User) -> dict[str, str]:
    """HOME, USER and LOGNAME as login would set them (a bare uid: HOME only)."""
    return {"HOME": u.home, **({"USER": u.name, "LOGNAME": u.name} if u.name else {})}
