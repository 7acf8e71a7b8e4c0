"""Sizes cost nothing, refusals allocate nothing, and ``max_bytes`` bounds the peak of a build.

* Plans on ``(10**9,)`` and ``(10**9, 10**9)`` geometries (every padding mode,
  transposed, a kernel of 10**6 taps), their nnz, bytes, row counts and row
  blocks: under 10 MB of traced memory.
* The requests of issue 11 that used gigabytes before refusing are refused
  with MatrixTooLargeError, allocating under 10 MB.
* A block of rows of a 10**9-sample signal builds, and equals the definition.
* For single-channel, 1x1, 1-D, 3-D, transposed and padding-mode geometries,
  the smallest ``max_bytes`` a build accepts bounds its peak memory, traced
  (tracemalloc) and resident (VmHWM, in a fresh process).
* The default limit is the smallest of MemAvailable, the cgroup limits
  (v1 and v2, read from files) and RLIMIT_AS, and the refusal names it.
"""

import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import convmat.memory as memory
from convmat import MatrixTooLargeError, conv_matrix, conv_plan, conv_transpose_plan, fill

MB = 2**20
BILLION = 10**9


def traced(fn):
    """``fn()``'s result and the peak of traced memory while it ran (no background loader running)."""
    fill.settle()  # a loader started by an earlier build would allocate while this runs
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


HUGE_PLANS = {
    "1d": lambda: conv_plan((1, 1, 3), (BILLION,), padding=1),
    "2d": lambda: conv_plan((1, 1, 3, 3), (BILLION, BILLION), padding=1),
    "1d-million-taps": lambda: conv_plan((1, 1, 10**6), (BILLION,), dilation=7, padding="same"),
    "transposed": lambda: conv_transpose_plan((2, 3, 5, 5), (BILLION, 10**4), stride=3, padding=2, output_padding=2),
    "reflect": lambda: conv_plan((1, 1, 5), (BILLION,), padding=2, padding_mode="reflect"),
    "replicate": lambda: conv_plan((1, 1, 5, 5), (BILLION, BILLION), padding=7, padding_mode="replicate"),
    "circular": lambda: conv_plan((4, 4, 3), (BILLION,), padding=1, padding_mode="circular", stride=2),
    "reflect-transposed": lambda: conv_plan((1, 1, 5), (BILLION,), padding=2, padding_mode="reflect").transpose(),
    "replicate-transposed": lambda: conv_plan((2, 2, 3, 3), (BILLION, 50), padding=1, padding_mode="replicate",
                                              stride=2).transpose(),
}


@pytest.mark.parametrize("make", HUGE_PLANS.values(), ids=HUGE_PLANS.keys())
def test_plans_of_a_billion_samples_cost_nothing(make):
    def sizes():
        plan = make()
        blocks = plan.row_blocks(max_nnz=10**6)
        first = [next(blocks) for _ in range(3)]
        mid = plan.shape[0] // 2
        plan.max_row_nnz()
        return plan, plan.nnz, plan.nbytes("float32"), repr(plan), plan.row_nnz(mid, mid + 1000), first

    (plan, nnz, nbytes, text, row_nnz, first), peak = traced(sizes)
    assert peak < 10 * MB, f"{peak / MB:.1f} MB"
    assert nnz > BILLION and f"{nnz:,}" in text
    assert 0 < row_nnz <= 1000 * plan.max_row_nnz() if plan.ndim == 1 else row_nnz > 0
    assert first[0][0] == 0 and first[0][1] == first[1][0] and plan.row_nnz(*first[2]) <= 10**6


ISSUE_11_REQUESTS = {
    "1d-1001-taps-max-bytes": lambda: conv_matrix(np.ones((1, 1, 1001)), (10**6,), max_bytes=10**6),
    "2d-billion-default-limit": lambda: conv_matrix(np.ones((1, 1, 3, 3)), (BILLION, BILLION)),
    "1d-ten-million": lambda: conv_matrix(np.ones((1, 1, 3)), (10**7,), max_bytes=10**8),
}


@pytest.mark.parametrize("call", ISSUE_11_REQUESTS.values(), ids=ISSUE_11_REQUESTS.keys())
def test_refusals_allocate_nothing(call):
    def refuse():
        with pytest.raises(MatrixTooLargeError) as info:
            call()
        return str(info.value)

    message, peak = traced(refuse)
    assert peak < 10 * MB, f"{peak / MB:.1f} MB"
    assert "bytes" in message and "row blocks" in message


def test_row_block_of_a_billion_sample_signal_is_the_definition():
    rng = np.random.default_rng(11)
    w = rng.standard_normal((1, 1, 9))
    plan = conv_plan(w.shape, (BILLION,), padding=4)
    start, stop = BILLION - 1500, BILLION
    plan.build(w, rows=(start, start + 10))  # compiles the fill for these dtypes if it is loaded (not traced)
    B, peak = traced(lambda: plan.build(w, rows=(start, stop)))
    assert peak < 10 * MB
    assert B.shape == (stop - start, BILLION) and B.nnz == plan.row_nnz(start, stop)
    for i in (0, 700, stop - start - 5, stop - start - 1):
        j = start + i
        cols = [j - 4 + t for t in range(9) if 0 <= j - 4 + t < BILLION]
        row = B.indices[B.indptr[i] : B.indptr[i + 1]].tolist()
        assert row == cols
        assert B.data[B.indptr[i] : B.indptr[i + 1]].tolist() == [w[0, 0, c - j + 4] for c in cols]


# --------------------------------------------------------------------------- #
# the peak of a build is within max_bytes
# --------------------------------------------------------------------------- #
PEAK_CASES = {
    "single-channel-1x1": (lambda: conv_plan((1, 1, 1, 1), (300, 300)), None),
    "1d-k9": (lambda: conv_plan((1, 1, 9), (40_000,), padding=4), None),
    "3d": (lambda: conv_plan((2, 2, 3, 3, 3), (14, 14, 14), padding=1), None),
    "transposed-stride-2": (lambda: conv_transpose_plan((4, 2, 3, 3), (40, 40), stride=2, padding=1, output_padding=1), None),
    "reflect": (lambda: conv_plan((2, 2, 5, 5), (60, 60), padding=2, padding_mode="reflect"), None),
    "replicate": (lambda: conv_plan((1, 1, 5, 5), (60, 60), padding=6, padding_mode="replicate"), None),
    "circular-transposed": (lambda: conv_plan((2, 2, 3, 3), (50, 50), padding=1, padding_mode="circular").transpose(), None),
    "groups-row-block": (lambda: conv_plan((8, 2, 3, 3), (50, 50), padding=1, groups=4, stride=2), (1000, 3000)),
}


def _accepts(plan, w, rows, limit):
    try:
        import convmat.assemble as A

        saved = A._assemble
        A._assemble = lambda *args: None  # the guard only
        try:
            plan.build(w, max_bytes=limit, rows=rows, threads=2)
        finally:
            A._assemble = saved
        return True
    except MatrixTooLargeError:
        return False


@pytest.mark.parametrize("engine", ["compiled", "arrays"])
@pytest.mark.parametrize("make, rows", PEAK_CASES.values(), ids=PEAK_CASES.keys())
def test_peak_is_within_the_smallest_accepted_max_bytes(make, rows, engine, monkeypatch):
    monkeypatch.setattr(fill, "USE_FILL_KERNEL", engine == "compiled")
    monkeypatch.setattr(fill, "FILL_KERNEL_WAIT", True)
    monkeypatch.setattr(fill, "FILL_KERNEL_NNZ", 0)
    plan = make()
    w = np.random.default_rng(3).standard_normal(plan.weight_shape)
    plan.build(w, rows=(0, 1))  # compiles the fill for these dtypes (not traced: a one-time cost)
    lo, hi = 0, 1 << 40
    while lo < hi:  # the smallest accepted limit, found without building
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _accepts(plan, w, rows, mid) else (mid + 1, hi)
    C, peak = traced(lambda: plan.build(w, max_bytes=lo, rows=rows, threads=2))
    final = C.data.nbytes + C.indices.nbytes + C.indptr.nbytes
    assert final == plan.nbytes(w.dtype, rows=rows)
    assert peak <= lo, f"peak {peak:,} > max_bytes {lo:,}"
    with pytest.raises(MatrixTooLargeError):
        plan.build(w, max_bytes=lo - 1, rows=rows, threads=2)


RSS_SCRIPT = r"""
import json, sys
import numpy as np
import convmat.assemble as A
import convmat.fill as F
from convmat import MatrixTooLargeError, conv_plan, conv_transpose_plan

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith(key + ":"))

plans = [conv_plan((1, 1, 1, 1), (1500, 1500)), conv_plan((1, 1, 9), (2_000_000,), padding=4),
         conv_transpose_plan((4, 4, 3, 3), (300, 300), stride=2, padding=1, output_padding=1),
         conv_plan((1, 1, 5, 5), (700, 700), padding=2, padding_mode="reflect")]
F.FILL_KERNEL_NNZ, F.FILL_KERNEL_WAIT, F.USE_FILL_KERNEL = 0, True, sys.argv[1] == "compiled"  # which engine
out = []
for plan in plans:
    w = np.ones(plan.weight_shape)
    plan.build(np.ones(plan.weight_shape), rows=(0, 10))  # warm up the code paths (and load Numba once)
    saved, A._assemble = A._assemble, lambda *a: None
    lo, hi = 0, 1 << 40
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            plan.build(w, max_bytes=mid, threads=1)
            hi = mid
        except MatrixTooLargeError:
            lo = mid + 1
    A._assemble = saved
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the high-water mark VmHWM
    before = status("VmRSS")
    C = plan.build(w, max_bytes=lo, threads=1)
    out.append((status("VmHWM") - before, lo))
    del C
print(json.dumps(out))
"""


@pytest.mark.parametrize("engine", ["compiled", "arrays"])
def test_resident_peak_is_within_max_bytes(engine):
    """VmHWM (resident high-water mark) grows by no more than the accepted limit (fresh process).

    Both engines of a host build are measured; the warm-up loads Numba's compiler, a one-time cost of
    the process (about 100 MB resident) that ``max_bytes`` does not cover (the README says so).
    """
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the resident high-water mark")
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, engine], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for grown, limit in json.loads(done.stdout):
        assert grown <= limit, f"resident peak grew by {grown:,} bytes, max_bytes {limit:,}"


# --------------------------------------------------------------------------- #
# the default limit
# --------------------------------------------------------------------------- #
def test_cgroup_limits_are_read_for_v1_and_v2(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/job/step\n0::/slice/unit\n")
    v1 = tmp_path / "fs" / "memory" / "job" / "step"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("1000000\n")
    (v1 / "memory.usage_in_bytes").write_text("250000\n")
    v2 = tmp_path / "fs" / "slice" / "unit"
    v2.mkdir(parents=True)
    (v2 / "memory.max").write_text("5000000\n")
    (v2 / "memory.current").write_text("1000000\n")
    (v2 / "memory.stat").write_text("anon 700000\ninactive_file 200000\nactive_file 100000\n")
    (tmp_path / "fs" / "slice" / "memory.max").write_text("max\n")  # an ancestor without a limit
    found = memory._cgroup_limits(str(proc), str(tmp_path / "fs"))
    assert sorted(h for h, _ in found) == [750000, 4200000]  # v2: usage less the inactive page cache
    assert any(p.endswith("memory.limit_in_bytes") for _, p in found)


def test_default_limit_is_the_smallest_and_the_refusal_names_it(monkeypatch):
    plan = conv_plan((1, 1, 3, 3), (1000, 1000), padding=1)  # ~108 MB as float64
    w = np.ones((1, 1, 3, 3))
    monkeypatch.setattr(memory, "available_memory", lambda: 10**12)
    monkeypatch.setattr(memory, "_cgroup_limits", lambda: [(50 * 10**6, "/sys/fs/cgroup/job/memory.max")])
    monkeypatch.setattr(memory, "_rlimit_headroom", lambda: 10**11)
    with pytest.raises(MatrixTooLargeError, match=r"cgroup memory limit less its usage \(/sys/fs/cgroup/job/memory.max\)") as info:
        plan.build(w)
    assert info.value.parameter == "max_bytes"
    monkeypatch.setattr(memory, "_rlimit_headroom", lambda: 10**7)
    with pytest.raises(MatrixTooLargeError, match=r"address space left under RLIMIT_AS \(10.0 MB\)"):
        plan.build(w)
    monkeypatch.setattr(memory, "available_memory", lambda: 10**6)
    with pytest.raises(MatrixTooLargeError, match=r"MemAvailable"):
        plan.build(w)


def test_rlimit_as_applies_in_a_limited_process():
    script = (
        "import resource, numpy as np, convmat\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))\n"
        "try:\n"
        "    convmat.conv_matrix(np.ones((8, 8, 3, 3)), (2000, 2000), padding=1)\n"
        "except convmat.MatrixTooLargeError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "RLIMIT_AS" in done.stdout
