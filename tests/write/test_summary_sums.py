"""Sums of large float records for their summaries (``summary._row_sums``): a kernel
compiled by the ``spikestore-jit`` thread where numba is loaded, NumPy's sum
otherwise; the same summary either way (to float64 rounding), NaN and inf included."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from spikestore import summary
from spikestore.codecs import encode_values

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="the compiled sums need numba")


@pytest.fixture(scope="module")
def kernel() -> object:
    import numba

    return summary._build_row_sums(numba)


def _both(monkeypatch: pytest.MonkeyPatch, kernel: object, x: torch.Tensor):
    enc = encode_values(x)
    monkeypatch.setattr(summary, "_SUMS", [kernel])
    fast = summary.summarize(enc)
    monkeypatch.setattr(summary, "_SUMS", [None])
    slow = summary.summarize(enc)
    return fast, slow


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 8, 16, 28, 28), (1 << 17,), (3, 1 << 15), (1, 70001)])
def test_compiled_sums_give_numpys_summary(monkeypatch, kernel, dtype, shape) -> None:
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1e3).to(dtype)
    (row, axis0), (want, want0) = _both(monkeypatch, kernel, x)
    # numel, min and max are exact; the sums agree to float64 rounding.
    np.testing.assert_array_equal(row[[0, 2, 3]], want[[0, 2, 3]])
    np.testing.assert_allclose(row[[1, 4]], want[[1, 4]], rtol=1e-12, atol=1e-9)
    assert row[1] == pytest.approx(float(x.double().sum()), rel=1e-12, abs=1e-9)
    if len(shape) >= 2:
        np.testing.assert_allclose(axis0, want0, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(axis0, x.double().reshape(shape[0], -1).sum(1), rtol=1e-12)
    else:
        assert axis0 is None and want0 is None


@needs_numba
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_compiled_sums_leave_nan_and_inf_to_numpy(monkeypatch, kernel, bad) -> None:
    """A record with NaN is summarised NaN-aware, one with inf as inf: exactly as
    without the kernel."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn((4, 1 << 15), generator=g)
    x[2, 100] = bad
    (row, axis0), (want, want0) = _both(monkeypatch, kernel, x)
    np.testing.assert_array_equal(row, want)
    np.testing.assert_array_equal(axis0, want0)
    assert not np.isnan(row[1]) if bad != bad else np.isinf(row[1])


@needs_numba
def test_integer_valued_sums_are_exact(monkeypatch, kernel) -> None:
    x = torch.randint(-1000, 1000, (8, 1 << 14), generator=torch.Generator().manual_seed(3))
    (row, axis0), (want, want0) = _both(monkeypatch, kernel, x.float())
    np.testing.assert_array_equal(row, want)
    np.testing.assert_array_equal(axis0, want0)
    np.testing.assert_array_equal(axis0, x.sum(1).double().numpy())


@needs_numba
def test_the_jit_thread_compiles_the_sums_for_a_float_recording(tmp_path) -> None:
    """With numba loaded, a float-only recording starts the jit thread (its records
    never reach the spike test's compile), the kernel arrives, and the stored
    summaries are the records' sums."""
    code = textwrap.dedent(
        f"""
        import time, numba, torch, numpy as np
        import spikestore
        from spikestore import summary
        g = torch.Generator().manual_seed(4)
        xs = [torch.randn((4, 1 << 15), generator=g) for _ in range(40)]
        w = spikestore.StoreWriter({str(tmp_path / "r")!r})
        for i, x in enumerate(xs):
            w.append("v", "l", x)
            if i == 0:
                deadline = time.monotonic() + 60
                while not summary._SUMS and time.monotonic() < deadline:
                    time.sleep(0.01)
        w.close()
        assert summary._SUMS and summary._SUMS[0] is not None, summary._SUMS
        import zarr
        got = zarr.open_array({str(tmp_path / "r" / "v" / "l" / "f0" / "summary")!r}, mode="r")
        want = np.array([x.double().sum().item() for x in xs])
        np.testing.assert_allclose(got[:, 1], want, rtol=1e-12, atol=1e-9)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


@needs_numba
def test_a_sum_the_kernel_cannot_finish_is_numpys(monkeypatch, kernel) -> None:
    """Regression: float64 values of +-1e308 whose exact sum is 0 overflowed in the
    kernel's order of additions to inf - inf: the record's sum, mean and per-index sums
    were stored as NaN, a record without NaN. A sum the kernel cannot finish is now
    NumPy's, as without the kernel."""
    x = torch.full((4, 1 << 14), 1e308, dtype=torch.float64)
    x.view(4, -1, 8)[:, 1::2] = -1e308  # the sign changes every 8 elements
    (row, axis0), (want, want0) = _both(monkeypatch, kernel, x)
    assert not np.isnan(row).any() and not np.isnan(axis0).any()
    np.testing.assert_array_equal(row, want)
    np.testing.assert_array_equal(axis0, want0)


@needs_numba
def test_blocked_sums_stay_near_numpys_rounding(monkeypatch, kernel) -> None:
    """2**53 then ones: one accumulator drops every one; blocks of 1,024 bound the loss
    (3.6e-12 relative without them, NumPy 1.8e-15)."""
    x = torch.ones((1, 1 << 20), dtype=torch.float64)
    x[0, 0] = 2.0**53
    (row, _), _ = _both(monkeypatch, kernel, x.reshape(-1))
    exact = 2.0**53 + (1 << 20) - 1
    assert abs(row[1] - exact) / exact < 2e-14


@needs_numba
def test_kernels_registered_after_the_jit_thread_ran_are_compiled() -> None:
    """Regression: a kernel registered (``compile_later``) after the jit thread had
    taken the list (``spikestore.summary`` imported after a large spike record was
    packed) was never compiled, and every large float record asked for it again."""
    code = textwrap.dedent(
        """
        import time, numba, torch
        from spikestore.codecs import rows
        rows.spike_pack((torch.rand(4, 1 << 16) < 0.1).float())  # starts the jit thread
        deadline = time.monotonic() + 60
        while not rows._REPACK and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rows._REPACK, "the jit thread did not finish"
        slot = []
        rows.compile_later(slot, lambda nb: nb.njit(lambda a: a + 1))
        rows.start_jit()
        while not slot and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slot and slot[0] is not None and slot[0](1) == 2, slot
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
