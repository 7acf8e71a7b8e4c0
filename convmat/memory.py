"""The one memory guard: how much a build may allocate, and the refusal when it cannot.

The default limit is the smallest of what the operating system can give this
process: ``MemAvailable`` (``/proc/meminfo``), the memory limit of every cgroup
the process is in less its usage (cgroup v2 ``memory.max - memory.current``,
v1 ``memory.limit_in_bytes - memory.usage_in_bytes``, the usage without the
page cache the kernel can drop, ``inactive_file``), and the address space
left under ``RLIMIT_AS``; for a GPU backend, the free memory of its device.
The refusal (:class:`MatrixTooLargeError`, raised before anything is
allocated) says which limit applied.
"""

from __future__ import annotations

import functools
import os

from .backends import available_memory, device_memory_limit
from .errors import ParameterError
from .geometry import as_int

__all__ = ["MatrixTooLargeError", "check_fits", "host_memory_limit", "human", "memory_limit"]

_CGROUP = "/sys/fs/cgroup"


class MatrixTooLargeError(MemoryError):
    """A matrix (or row block) would not fit in the memory limit; raised before allocating.

    ``.parameter`` is ``'max_bytes'`` when the memory limit refused it (the
    option that lets it through), else None.
    """

    def __init__(self, message: str = "", parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


def human(nbytes: float) -> str:
    """``nbytes`` in B, kB, MB, GB or TB (powers of 1000).

    Examples
    --------
    >>> human(903757828)
    '903.8 MB'
    """
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"  # pragma: no cover


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # 'max' (v2) means no limit


def _inactive_file(directory: str) -> int:
    """Reclaimable page cache of a cgroup (``memory.stat``: v2 ``inactive_file``, v1 ``total_inactive_file``)."""
    try:
        with open(os.path.join(directory, "memory.stat")) as fh:
            stats = dict(line.split()[:2] for line in fh if len(line.split()) >= 2)
    except OSError:
        return 0
    value = stats.get("inactive_file", stats.get("total_inactive_file", "0"))
    return int(value) if value.isdigit() else 0


@functools.lru_cache(maxsize=8)
def _cgroup_files(proc_cgroup: str, root: str) -> tuple:
    """``(directory, limit file, usage file)`` of every cgroup memory controller on this process's path.

    Read once per process (a process does not change cgroups while it builds).
    """
    try:
        with open(proc_cgroup) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return ()
    out = []
    for line in lines:
        hier, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hier == "0" and controllers == "":  # v2 (alone, or beside v1 under 'unified')
            bases, limit_f, usage_f = (root, os.path.join(root, "unified")), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # v1
            bases, limit_f, usage_f = (os.path.join(root, "memory"),), "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for base in bases:
            for depth in range(len(parts), -1, -1):  # the cgroup and its ancestors (and a container's root)
                d = os.path.join(base, *parts[:depth])
                if os.path.exists(os.path.join(d, limit_f)):
                    out.append((d, limit_f, usage_f))
    return tuple(out)


def _cgroup_limits(proc_cgroup: str = "/proc/self/cgroup", root: str = _CGROUP):
    """``(headroom, file)`` for each cgroup memory limit on the path of this process."""
    out = []
    for d, limit_f, usage_f in _cgroup_files(proc_cgroup, root):
        limit, usage = _read_int(os.path.join(d, limit_f)), _read_int(os.path.join(d, usage_f))
        if limit is not None and limit < 2**60:  # v1 says 'no limit' with a huge number
            usage = max(0, (usage or 0) - _inactive_file(d))  # page cache the kernel can drop
            out.append((max(0, limit - usage), os.path.join(d, limit_f)))
    return out


def _rlimit_headroom():
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size = 0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    size = int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return max(0, soft - size)


def host_memory_limit() -> tuple[int | None, str]:
    """The bytes a new host allocation may take, and which limit says so.

    Examples
    --------
    >>> limit, what = host_memory_limit()
    >>> limit is None or limit >= 0
    True
    """
    candidates = []
    avail = available_memory()
    if avail is not None:
        candidates.append((avail, "the available memory (MemAvailable)"))
    for headroom, path in _cgroup_limits():
        candidates.append((headroom, f"the cgroup memory limit less its usage ({path})"))
    rl = _rlimit_headroom()
    if rl is not None:
        candidates.append((rl, "the address space left under RLIMIT_AS"))
    if not candidates:
        return None, "no known limit"
    return min(candidates, key=lambda c: c[0])


def memory_limit(max_bytes, be) -> tuple[int | None, str]:
    """The limit a build on backend ``be`` must respect, and its name (for the refusal)."""
    if max_bytes is not None:
        limit = as_int(max_bytes, "max_bytes")
        if limit < 0:
            raise ParameterError("max_bytes", f"max_bytes must be >= 0 (a number of bytes), got {max_bytes!r}")
        return limit, "limit max_bytes"
    device = device_memory_limit(be)
    if device is not None:
        return device, f"free memory of the {be.name!r} device"
    return host_memory_limit()


def check_fits(need: int, max_bytes, be, describe, *, hint="build it in row blocks (rows=...) or raise max_bytes"):
    """Raise MatrixTooLargeError when ``need`` bytes exceed the limit (``describe()`` says what).

    The one memory guard of everything convmat builds on a backend: the
    limit is ``max_bytes`` or :func:`memory_limit`'s default, and the message
    names it, the size and what to do (``hint``).
    """
    limit, what = memory_limit(max_bytes, be)
    if limit is not None and need > limit:
        raise MatrixTooLargeError(
            f"{describe()}; building it would take {human(need)} ({need:,} bytes) at the peak, more than "
            f"{what} ({human(limit)}); {hint}",
            parameter="max_bytes",
        )
