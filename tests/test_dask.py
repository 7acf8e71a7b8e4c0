"""DaskConvOperator on a real distributed.LocalCluster (2 worker processes, 1 thread each, loopback)."""

import os
import signal
import tempfile
import time

import numpy as np
import pytest
from scipy.sparse.linalg import lsqr

from convmat import ConvOperator, MatrixTooLargeError, adjoint_test, fill
from convmat.blocks import build_slab, embed, reduce_partials, slab_adjoint, slabs
from convmat.streamed import host_weight


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
        memory_limit="1.5GB",
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _op(**kw):
    from convmat.dask import DaskConvOperator

    return DaskConvOperator(**kw)


def _layer(seed=0, cin=24, cout=24, n=(20, 20)):
    rng = np.random.default_rng(seed)
    return rng, rng.standard_normal((cout, cin, 3, 3)), n


def _sent(client):
    """Bytes all workers have sent so far (to peers and to this client)."""
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())


def _local_adjoint(D, y):
    """The partial sums of D's slabs added along the same fixed tree, in this process."""
    N = y.shape[0]
    y3 = y.reshape(N, D.out_shape[0], -1)
    parts = [
        slab_adjoint(build_slab(D.plan, D._w, s, D.dtype), s, np.ascontiguousarray(y3[:, :, s[0] : s[1]]))
        for s in D.slabs
    ]
    return embed(reduce_partials(parts), int(np.prod(D.in_shape[1:]))).reshape((N,) + D.in_shape)


def test_products_equal_the_single_machine_operator(client):
    rng, w, n = _layer()
    A = ConvOperator(w, n, padding=1, stride=(1, 2))
    D = _op(weight=w, in_shape=n, padding=1, stride=(1, 2), client=client, block_bytes=A.plan.nbytes(w.dtype) // 8)
    assert len(D.slabs) >= 8 and D.keep
    x = rng.standard_normal((3,) + A.in_shape)
    y = rng.standard_normal((3,) + A.out_shape)
    assert np.array_equal(D(x), A(x))  # each row: one row kernel, as stored
    assert np.array_equal(D(x[1]), A(x[1]))
    got = D.apply_adjoint(y)
    assert np.array_equal(got, _local_adjoint(D, y))  # the fixed tree, bit for bit
    assert np.array_equal(D.apply_adjoint(y), got)  # and on every run
    assert np.allclose(got, A.apply_adjoint(y), rtol=0, atol=1e-11)
    # rebuilt on the workers at every product: the same bits
    S = _op(weight=w, in_shape=n, padding=1, stride=(1, 2), client=client, keep=False,
            block_bytes=A.plan.nbytes(w.dtype) // 8)
    assert not S.keep and S.blocks is None
    assert np.array_equal(S(x), A(x)) and np.array_equal(S.apply_adjoint(y), got)
    D.close()


@pytest.mark.parametrize("keep", [True, False])
def test_empty_batches(client, keep):
    """N = 0 images: empty results of the right shapes, as ConvOperator gives."""
    w = np.ones((4, 2, 3, 3))
    D = _op(weight=w, in_shape=(8, 8), padding=1, client=client, block_bytes=3000, keep=keep)
    assert len(D.slabs) > 1
    assert D(np.zeros((0, 2, 8, 8))).shape == (0, 4, 8, 8)
    assert D.apply_adjoint(np.zeros((0, 4, 8, 8))).shape == (0, 2, 8, 8)


def test_dask_arrays_in_and_out(client):
    import dask.array as da

    rng, w, n = _layer(1, cin=4, cout=6, n=(16, 12))
    A = ConvOperator(w, n, padding=1, padding_mode="reflect")
    D = _op(weight=w, in_shape=n, padding=1, padding_mode="reflect", client=client,
            block_bytes=A.plan.nbytes(w.dtype) // 4)
    assert len(D.slabs) >= 4
    x = rng.standard_normal((2,) + A.in_shape)
    y = rng.standard_normal((2,) + A.out_shape)
    xd = da.from_array(x, chunks=(1, 4, 8, 12))
    out = D(xd)
    assert isinstance(out, da.Array) and out.shape == (2,) + A.out_shape
    assert np.array_equal(out.compute(), A(x))
    assert isinstance(D(x, out="dask"), da.Array)
    assert isinstance(D(xd, out="numpy"), np.ndarray)
    back = D.apply_adjoint(da.from_array(y, chunks=(2, 3, 16, 12)))
    assert isinstance(back, da.Array)
    assert np.array_equal(back.compute(), D.apply_adjoint(y))
    with pytest.raises(ValueError, match="out must be 'numpy', 'dask' or None"):
        D(x, out="cupy")


def test_linear_operator_lsqr_and_adjoint_test(client):
    rng, w, n = _layer(2, cin=3, cout=3, n=(10, 10))
    w = 0.05 * w
    w[:, :, 1, 1] += np.eye(3)  # well conditioned: lsqr converges in a few iterations
    D = _op(weight=w, in_shape=n, padding=1, client=client, block_bytes=20_000, bias=np.arange(3.0))
    assert adjoint_test(D).passed
    x = rng.standard_normal(D.shape[1])
    sol, stop, iters = lsqr(D, D @ x, atol=1e-12, btol=1e-12, iter_lim=60)[:3]
    assert stop in (1, 2) and np.abs(sol - x).max() < 1e-8
    A = ConvOperator(w, n, padding=1, bias=np.arange(3.0))
    X = rng.standard_normal((D.shape[1], 3))
    assert np.array_equal(D.matmat(X), A.matmat(X))
    img = rng.standard_normal((3, 10, 10))
    assert np.array_equal(D(img), A(img))  # the bias, on images only


def test_the_client_never_holds_a_block(client):
    rng, w, n = _layer(3)
    D = _op(weight=w, in_shape=n, padding=1, client=client, block_bytes=3_000_000)
    matrix = D.plan.nbytes(D.dtype)
    x = rng.standard_normal((1,) + D.in_shape)
    y = rng.standard_normal((1,) + D.out_shape)
    D(x)  # the slabs are built (on the workers) by the first product
    for product, operand in ((D.apply, x), (D.apply_adjoint, y)):
        before = _sent(client)
        product(operand)
        sent = _sent(client) - before
        assert 0 < sent <= 0.01 * matrix, (sent, matrix)


def test_bad_input(client):
    from convmat.dask import DaskConvOperator

    w = np.ones((2, 2, 3, 3))
    with pytest.raises(TypeError, match="client must be a distributed.Client, got str"):
        DaskConvOperator(w, (8, 8), client="tcp://127.0.0.1:8786")
    # 64 -> 64 channels 3x3 on 256^2 (2.4e9 non-zeros): 4 GB blocks on 1.5 GB workers, refused before building
    known = set(client.futures)
    big = np.ones((64, 64, 3, 3), dtype=np.float32)
    with pytest.raises(MatrixTooLargeError, match=r"a block of [0-9.]+ GB \([0-9,]+ bytes\) is larger than the smallest worker memory limit "
                       r"\(1\.5 GB.*use block_bytes=187,500,000 or less"):
        DaskConvOperator(big, (256, 256), padding=1, client=client, block_bytes=4 * 10**9)
    assert set(client.futures) <= known  # nothing was submitted
    with pytest.raises(TypeError, match="keep must be True, False or None"):
        DaskConvOperator(w, (8, 8), client=client, keep="yes")


def test_a_closed_client_is_an_error_not_a_hang(client):
    import distributed

    second = distributed.Client(client.scheduler.address)
    w = np.ones((2, 2, 3, 3))
    D = _op(weight=w, in_shape=(8, 8), client=second, block_bytes=10_000)
    second.close()
    t = time.perf_counter()
    with pytest.raises(RuntimeError, match="the dask client is not running \\(status 'closed'\\)"):
        D(np.ones((2, 8, 8)))
    with pytest.raises(RuntimeError, match="not running"):
        _op(weight=w, in_shape=(8, 8), client=second)
    assert time.perf_counter() - t < 5


def test_rebuilt_products_are_fused(monkeypatch):
    """In rebuild mode a worker computes a slab's product without building the slab
    (assemble.fused_matvec and fused_matmat, once the compiled fill is loaded), with the bits of the
    stored product; before the fill is loaded, it builds the slab."""
    from convmat import dask as cd

    rng, w, n = _layer(5, cin=6, cout=5, n=(12, 10))
    A = ConvOperator(w, n, padding=1, stride=(2, 1))
    plan, hw = A.plan, host_weight(w, None)
    assert fill.kernel(np.float64, np.int32, wait=True) is not None
    built, build = [], cd._build_streamed
    monkeypatch.setattr(cd, "_build_streamed", lambda *a: built.append(a[2]) or build(*a))
    x = rng.standard_normal((2,) + A.in_shape)
    ref = A(x).reshape(2, A.out_shape[0], -1)
    ref1 = A(x[:1]).reshape(1, A.out_shape[0], -1)  # one vector: the bits of the stored one-vector product
    x3 = x.reshape(2, A.in_shape[0], -1)
    parts = slabs(plan, np.float64, plan.nbytes(np.float64) // 4)
    assert len(parts) >= 4
    for s in parts:
        y = cd._forward_streamed((plan, hw), s, x3[:1, :, s[2] : s[3]], 1, 1 << 12)
        assert y.tobytes() == ref1[:, :, s[0] : s[1]].tobytes()
    assert built == []  # one vector: fused, no slab built
    for s in parts:
        y = cd._forward_streamed((plan, hw), s, x3[:, :, s[2] : s[3]], 1, 1 << 12)
        assert y.tobytes() == ref[:, :, s[0] : s[1]].tobytes()
    assert built == []  # a batch: fused too
    monkeypatch.setattr(cd, "fused_matvec", lambda *a, **k: None)  # the fill not loaded yet: built
    monkeypatch.setattr(cd, "fused_matmat", lambda *a, **k: None)
    for n_images, expect in ((1, ref1), (2, ref)):
        s = parts[1]
        y = cd._forward_streamed((plan, hw), s, x3[:n_images, :, s[2] : s[3]], 1, 1 << 12)
        assert y.tobytes() == expect[:, :, s[0] : s[1]].tobytes() and built[-1] == s


def _kill_once(flag, names):
    """A worker plugin that kills its worker process (SIGKILL) when a task named in ``names`` has finished
    there, once for all workers (the first to create ``flag``).  Defined here so that it is pickled by value."""
    from dask.utils import key_split
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillOnce(WorkerPlugin):
        def transition(self, key, start, finish, **kwargs):
            if finish == "memory" and key_split(key) in names:
                try:
                    os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    return
                os.kill(os.getpid(), signal.SIGKILL)

    return KillOnce()


@pytest.mark.parametrize("keep, product, N", [(True, "forward", 2), (False, "forward", 1), (False, "forward", 3),
                                              (True, "adjoint", 1), (False, "adjoint", 2)])
def test_a_worker_killed_during_a_product_loses_nothing(client, keep, product, N, monkeypatch):
    """A worker process killed while a product runs (after its first slab's task has finished there,
    with the operands of its other slabs in its memory): the product completes, with the same bits."""
    from convmat import dask as cd

    runs, run_tasks = [], cd._run
    monkeypatch.setattr(cd, "_run", lambda *a, **k: runs.append(k) or run_tasks(*a, **k))
    client.wait_for_workers(2, timeout=60)
    rng, w, n = _layer(6, cin=6, cout=6, n=(24, 16))
    A = ConvOperator(w, n, padding=1)
    D = _op(weight=w, in_shape=n, padding=1, client=client, keep=keep, block_bytes=A.plan.nbytes(w.dtype) // 24)
    assert len(D.slabs) >= 20 and D.keep == keep
    if N == 1:  # the fused path on the workers
        assert all(client.run(lambda: fill.kernel(np.float64, np.int32, wait=True) is not None).values())
    x = rng.standard_normal((N,) + A.in_shape)
    y = rng.standard_normal((N,) + A.out_shape)
    run = (lambda: D(x)) if product == "forward" else (lambda: D.apply_adjoint(y))
    expected = A(x) if product == "forward" else _local_adjoint(D, y)
    assert np.array_equal(run(), expected)  # kept slabs built, before the kill
    flag = os.path.join(tempfile.mkdtemp(), "killed")
    client.register_plugin(_kill_once(flag, {product, f"{product}_streamed"}), name="kill-once")
    try:
        before = set(client.scheduler_info()["workers"])
        t = time.perf_counter()
        got = run()
        assert os.path.exists(flag)  # a worker was killed during the product
        assert np.array_equal(got, expected)
        if product == "forward" and N == 3:  # halos sent a few slabs per worker at a time
            assert runs[-1]["window"] < len(D.slabs)
        if product == "adjoint" and N == 2:  # subtrees of the fixed tree, one group per worker at a time
            assert 2 < len(runs[-1]["order"]) < len(D.slabs) and runs[-1]["window"] == 2
        # Not hung: the scheduler may have sent data to the victim before it noticed the death, and retries
        # that connection for Dask's connect timeout (30 s by default; seen once in a CI rehearsal: 30.7 s).
        import dask
        from dask.utils import parse_timedelta

        assert time.perf_counter() - t < 30 + parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
        deadline = time.monotonic() + 30
        while set(client.scheduler_info()["workers"]) >= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not set(client.scheduler_info()["workers"]) >= before  # the victim is gone
        assert np.array_equal(run(), expected)
    finally:
        client.unregister_worker_plugin("kill-once")
    D.close()


def test_a_cluster_without_workers_is_an_error_not_a_hang():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        w = np.ones((2, 2, 3, 3))
        with pytest.raises(ValueError, match=r"no_workers_timeout must be a number of seconds > 0, got -1"):
            _op(weight=w, in_shape=(8, 8), client=c, no_workers_timeout=-1)
        kept = _op(weight=w, in_shape=(8, 8), padding=1, client=c, block_bytes=10_000, no_workers_timeout=1.0, keep=True)
        rebuilt = _op(weight=w, in_shape=(8, 8), padding=1, client=c, block_bytes=10_000, no_workers_timeout=1.0, keep=False)
        x = np.ones((2, 8, 8))
        assert np.array_equal(kept(x), rebuilt(x))
        cluster.scale(0)
        deadline = time.monotonic() + 30
        while c.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        for D in (kept, rebuilt):
            for product, operand in ((D.apply, x), (D.apply_adjoint, x)):
                t = time.perf_counter()
                with pytest.raises(RuntimeError, match=r"the dask cluster has had no workers for 1 s \(no_workers_timeout\): "
                                   r"the (forward|adjoint) product \([0-9]+ slabs\) cannot run"):
                    product(operand)
                assert time.perf_counter() - t < 10
        with pytest.raises(RuntimeError, match="the dask cluster has no workers"):
            _op(weight=w, in_shape=(8, 8), client=c)


def test_a_killed_worker_loses_no_product(client):
    # keep this test last: the nanny restarts the worker under a new address
    rng, w, n = _layer(4, cin=8, cout=8, n=(16, 16))
    A = ConvOperator(w, n, padding=1)
    D = _op(weight=w, in_shape=n, padding=1, client=client, block_bytes=A.plan.nbytes(w.dtype) // 6)
    x = rng.standard_normal((2,) + A.in_shape)
    y = rng.standard_normal((2,) + A.out_shape)
    assert np.array_equal(D(x), A(x))
    adj = D.apply_adjoint(y)
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while victim in client.scheduler_info()["workers"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim not in client.scheduler_info()["workers"]
    assert np.array_equal(D(x), A(x))  # lost slabs rebuilt from the plan
    assert np.array_equal(D.apply_adjoint(y), adj)
