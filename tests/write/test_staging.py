"""The caller-thread spike test and packing (spikestore/_staging.py, ``codecs.rows.spike_pack``).

A record is a spike record when every element's bits are those of ``0`` or of ``1`` in
its dtype; the packed bytes are ``np.packbits`` of ``record == 1`` flattened after the
layer's time-last permutation. Every test compares against two references: the torch
path the GPU uses (``spike_bits`` + ``pack_bits``) and a plain numpy statement of the
format (``docs/format.md``).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikestore._staging import stage
from spikestore.codecs import motion, pack_bits, rows, spike_bits, time_last
from spikestore.codecs.rows import encode, pack_ones, repack_rows, spike_pack

HAVE_NUMBA = importlib.util.find_spec("numba") is not None


@pytest.fixture(params=["numpy", "compiled"] if HAVE_NUMBA else ["numpy"], autouse=True)
def test_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both spike tests: numpy's two passes, and the compiled one (the
    ``fast`` extra) taken by records of any size, with large time-last records packed
    as recorded and reordered by the compiled kernel (``rows.repack_later``)."""
    if request.param == "compiled":
        monkeypatch.setattr(motion, "USE_NUMBA", True)  # whatever SPIKESTORE_NUMBA says
        kernel = rows._compiled_ones()
        assert kernel is not None
        monkeypatch.setattr(rows, "_ONES", [kernel])
        monkeypatch.setattr(rows, "_REPACK", [rows._compiled_repack()])
        monkeypatch.setattr(rows, "_JIT_MIN", 0)
    else:
        monkeypatch.setattr(rows, "_ONES", [None])
        monkeypatch.setattr(rows, "_REPACK", [None])
    return str(request.param)


FLOAT8 = [d for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None))]
DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.uint16,
    torch.int32,
    torch.uint32,
    torch.int64,
    torch.uint64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    *[d for d in FLOAT8 if d is not None],
]
FLOATS = [d for d in DTYPES if d.is_floating_point]
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _bits(t: torch.Tensor) -> np.ndarray:
    """The elements' bit patterns as unsigned integers (numpy), C order."""
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(view).numpy().view(_UINT[t.element_size()])


def reference_numpy(t: torch.Tensor, permute: tuple[int, ...] | None) -> np.ndarray | None:
    """The format's definition, by bit pattern: None if ``t`` is not a spike record."""
    if t.dtype == torch.bool:
        ones = t.numpy()
    else:
        u = _bits(t)
        one = _bits(torch.ones((), dtype=t.dtype))[()]
        if not np.isin(u, [0, one]).all():
            return None
        ones = u == one
    if permute is not None:
        ones = ones.transpose(permute)
    return np.packbits(ones.reshape(-1), bitorder="big")


def reference_torch(t: torch.Tensor, permute: tuple[int, ...] | None) -> np.ndarray | None:
    flag, bits = spike_bits(t, permute)
    return pack_bits(bits).numpy() if bool(flag) else None


def check(t: torch.Tensor, permute: tuple[int, ...] | None) -> np.ndarray | None:
    got = spike_pack(t, permute)
    want = reference_numpy(t, permute)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
    if t.dtype not in FLOAT8 and t.dtype not in (torch.uint16, torch.uint32, torch.uint64):
        theirs = reference_torch(t, permute)
        assert (theirs is None) == (got is None)
        if got is not None:
            np.testing.assert_array_equal(got, theirs)
    return got


def spikes(shape: tuple[int, ...], dtype: torch.dtype, p: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spikes_of_every_dtype_pack_like_numpy(dtype: torch.dtype) -> None:
    t = spikes((4, 3, 37), dtype)
    assert check(t, None) is not None
    assert check(t, (1, 2, 0)) is not None
    assert check(torch.zeros(5, dtype=dtype), None) is not None
    assert check(torch.ones(5, dtype=dtype), None) is not None


# Values next to 0 and 1 that must never pass for spikes.
NEAR = {
    "-0.0": -0.0,
    "nan": float("nan"),
    "-nan": -float("nan"),
    "inf": float("inf"),
    "-1": -1.0,
    "2": 2.0,
    "0.5": 0.5,
    "1.0000001": 1.0000001,
    "1 - eps": 1 - 2**-24,
    "denormal": 1e-45,
    "smallest normal": 2**-126,
}


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", sorted(NEAR))
@pytest.mark.parametrize("where", [0, 70, -1])  # in the first elements, or past them
def test_values_near_spikes_are_not_spikes(dtype: torch.dtype, name: str, where: int) -> None:
    t = spikes((3, 50), dtype)
    value = torch.tensor(NEAR[name], dtype=torch.float64).to(dtype)
    flat = t.view(-1)
    flat[where] = value
    v = _bits(value.reshape(1))[0]
    is_spike_bits = v in (0, _bits(torch.ones(1, dtype=dtype))[0])
    # Rounded to a narrow dtype, some values become exactly 0 or 1: spikes then.
    got = check(t, None)
    assert (got is not None) == is_spike_bits
    check(t, (1, 0))


def test_float32_bit_patterns_one_at_a_time() -> None:
    """Every single-bit change of +0.0 and 1.0 is refused, wherever it is."""
    base = spikes((2, 4096), torch.float32)
    u = base.view(torch.int32)
    for pos in (0, 63, 64, 5000, 8191):
        for bit in range(32):
            t = base.clone()
            t.view(torch.int32).view(-1)[pos] = (
                int(u.view(-1)[pos]) ^ (1 << bit)
                if bit < 31
                else (int(u.view(-1)[pos]) ^ -(1 << 31))
            )
            assert spike_pack(t, None) is None, (pos, bit)
            assert spike_pack(t, (1, 0)) is None, (pos, bit)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.uint8, torch.int32])
def test_integers_other_than_0_and_1_are_not_spikes(dtype: torch.dtype) -> None:
    for value in (2, -1, 255 if dtype == torch.uint8 else 3):
        t = spikes((8, 64), dtype)
        t[5, 60] = value
        assert check(t, None) is None
        assert check(t, (1, 0)) is None


# Time-last shapes: time 1..40, groups that fill bytes and groups that do not, several
# leading axes, and records large enough for the shift packing (>= 2**15 elements).
TIME_LAST = [
    (steps, shape, axis)
    for steps in (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 40, 72)
    for shape, axis in (
        ((steps, 64, 520), 0),
        ((3, steps, 12000), 1),
        ((steps, 33333), 0),
        ((steps, 5, 7), 0),
    )
]


@pytest.mark.parametrize("steps,shape,axis", TIME_LAST, ids=lambda v: str(v))
def test_time_last_packing(steps: int, shape: tuple[int, ...], axis: int) -> None:
    assert shape[axis] == steps
    permute = time_last(axis, len(shape))
    for p in (0.0, 0.05, 0.5, 1.0):
        assert check(spikes(shape, torch.float32, p, seed=steps), permute) is not None


@pytest.mark.parametrize("r", [520, 521, 522, 524, 16385])
@pytest.mark.parametrize("steps", [3, 4, 6, 8, 12])
def test_time_last_neurons_that_do_not_fill_bytes(steps: int, r: int) -> None:
    t = spikes((steps, 2, r * 4), torch.bfloat16, 0.4, seed=r)
    assert check(t, (1, 2, 0)) is not None
    assert check(t.reshape(steps, -1), (1, 0)) is not None


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
    big=st.integers(1, 4200),
    axis=st.integers(0, 4),
    dtype=st.sampled_from(DTYPES),
    p=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    spoil=st.sampled_from([None, *NEAR.values(), 2.0, -1.0]),
    seed=st.integers(0, 2**16),
)
def test_spike_pack_matches_the_format(shape, big, axis, dtype, p, spoil, seed) -> None:
    shape = (*shape[:-1], shape[-1] * big)  # up to ~10^5 elements: the shift path too
    axis %= len(shape)
    t = spikes(shape, dtype, p, seed)
    if spoil is not None and dtype != torch.bool:
        flat = t.view(-1)
        flat[seed % flat.numel()] = torch.tensor(spoil).to(dtype)
    permute = time_last(axis, len(shape))
    check(t, permute)
    check(t, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.bfloat16])
def test_non_contiguous_and_zero_dim_records(dtype: torch.dtype) -> None:
    base = spikes((16, 8, 300), dtype)
    for view in (base.transpose(0, 2), base[:, ::2], base[3], base.flip(0)):
        check(view, None)
        if view.dim() >= 2:
            check(view, time_last(0, view.dim()))
    for value in (0, 1):
        assert check(torch.tensor(value).to(dtype), None) is not None
    if dtype.is_floating_point:
        assert check(torch.tensor(-0.0, dtype=dtype), None) is None


def test_spike_pack_does_not_copy_or_change_the_tensor() -> None:
    t = spikes((8, 4096), torch.float32)
    before = t.clone()
    spike_pack(t, (1, 0))
    assert torch.equal(t, before) and t.view(torch.int32).equal(before.view(torch.int32))


def test_pack_ones_any_permutation() -> None:
    """Permutations other than time-last (a direct caller's) take the transposing path."""
    rng = np.random.default_rng(3)
    ones = rng.random((3, 4, 5, 6)) < 0.3
    for perm in ((3, 2, 1, 0), (0, 2, 1, 3), (1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)):
        want = np.packbits(ones.transpose(perm).reshape(-1))
        np.testing.assert_array_equal(pack_ones(ones, ones.shape, perm), want)


def test_stage_packs_spikes_and_copies_the_rest(test_path: str) -> None:
    t = spikes((8, 64, 100), torch.float32)
    s = stage(t, False, (1, 2, 0))
    assert s.values is None and s.packed is not None
    assert s.nbytes == math.ceil(t.numel() / 8)
    # With the compiled reordering the caller packs in the record's own order.
    assert s.as_recorded == (test_path == "compiled")
    want = reference_numpy(t, (1, 2, 0))
    np.testing.assert_array_equal(s.bits(), want)
    enc = s.encode()
    assert enc.encoding == "bitpack" and enc.permute == (1, 2, 0)
    assert enc.as_recorded == s.as_recorded
    if enc.as_recorded:
        np.testing.assert_array_equal(enc.row, reference_numpy(t, None))
        np.testing.assert_array_equal(repack_rows(enc.row[None], t.shape, (1, 2, 0))[0], want)
    else:
        np.testing.assert_array_equal(enc.row, want)
    v = torch.randn(8, 64, 100)
    s = stage(v, False, None)
    assert s.packed is None and s.values is not None
    v.add_(1)  # the caller changes its tensor after the hook
    assert not torch.equal(s.values, v)
    assert s.encode().encoding == "raw"
    # A python number is never tested for spikes.
    assert stage(torch.tensor(1.0, dtype=torch.float64), True, None).packed is None


def test_encode_uses_the_same_test() -> None:
    t = spikes((4, 9, 11), torch.float16)
    assert encode(t, permute=(1, 2, 0)).encoding == "bitpack"
    t[0, 0, 0] = -0.0
    assert encode(t, permute=(1, 2, 0)).encoding == "raw"


def test_packed_bytes_do_not_share_the_scratch_buffer() -> None:
    """Later calls, and calls from other threads at once, never change a returned row."""
    import threading

    recs = [spikes((8, 64, 130), torch.float32, p, seed=i) for i, p in enumerate((0.1, 0.5))]
    first = spike_pack(recs[0], (1, 2, 0))
    assert first is not None
    keep = first.copy()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(30):
                t = recs[i % 2]
                np.testing.assert_array_equal(
                    spike_pack(t, (1, 2, 0)), reference_numpy(t, (1, 2, 0))
                )
                np.testing.assert_array_equal(spike_pack(t, None), reference_numpy(t, None))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]
    np.testing.assert_array_equal(first, keep)
