"""``hotloop.collate.decollate_batch``: native module == pure-Python reference == ``monai.data.decollate_batch``.

Three implementations run on the same input; what each returns (types, values, tensor views down to their memory,
MetaTensor ``__dict__``\\ s) or raises (type; native and reference also the message) must agree. Batches come from
hypothesis (nested dicts, lists and tuples of batch-first tensors, per-sample and ragged lists, NumPy arrays and
scalars, 0-d tensors, strings, bytes, ``None``, odd leaves, MONAI ``MetaTensor`` batches from ``list_data_collate``);
the documented cases and the bad inputs get explicit tests below.
"""

from __future__ import annotations

import collections
import importlib
import math
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hotloop.collate
from hotloop.collate import _decollate as native_module  # the build makes it: no skip when it is missing
from hotloop.collate import _reference
from hotloop.collate import decollate as decollate_module
from hotloop.collate._reference import MAX_DEPTH

try:
    import monai.data as monai_data
    from monai.data import MetaTensor, list_data_collate
    from monai.data.meta_obj import get_track_meta, set_track_meta
except ModuleNotFoundError:  # MONAI is optional (hotloop[monai]): native == reference still runs
    monai_data = None

NATIVE = native_module.decollate_batch
REFERENCE = _reference.decollate_batch
MONAI = monai_data.decollate_batch if monai_data is not None else None
requires_monai = pytest.mark.skipif(monai_data is None, reason="the parity target, MONAI, is not installed")

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------------------
# Outcomes and their comparison


def _outcome(fn: Callable[..., Any], batch: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(batch, **kwargs)
    except Exception as error:  # every exception is an outcome to compare
        return "raised", error


def assert_same(a: Any, b: Any, where: str = "out") -> None:
    """Equal results, down to types, dict key order, tensor memory and MetaTensor attributes."""
    assert type(a) is type(b), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        _assert_same_tensor(a, b, where)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, Mapping):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: len {len(a)} vs {len(b)}"
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, (float, complex, np.floating, np.complexfloating)):
        assert (a == b) or (math.isnan(abs(a)) and math.isnan(abs(b))), f"{where}: {a!r} vs {b!r}"
    else:
        assert a is b or a == b, f"{where}: {a!r} vs {b!r}"


def _assert_same_tensor(a: torch.Tensor, b: torch.Tensor, where: str) -> None:
    assert (a.dtype, a.shape, a.stride(), a.device) == (b.dtype, b.shape, b.stride(), b.device), where
    assert a.requires_grad == b.requires_grad and (a.grad_fn is None) == (b.grad_fn is None), where
    if a._base is not None or b._base is not None:  # views (of the batch): the same memory
        assert a.numel() == 0 or a.data_ptr() == b.data_ptr(), f"{where}: not views of the same memory"
    assert _values_equal(a.detach(), b.detach()), f"{where}: values differ"
    if type(a) is not torch.Tensor:  # MetaTensor: its metadata, applied operations, is_batch…
        assert_same(a.__dict__, b.__dict__, f"{where}.__dict__")


def _values_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.is_floating_point() or a.is_complex():
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    return torch.equal(a, b)


def assert_outcomes(batch: Any, *, against_monai: bool = True, **kwargs: Any) -> tuple[str, Any]:
    """Runs all three; native and reference agree exactly, MONAI on results and exception types."""
    native = _outcome(NATIVE, batch, **kwargs)
    reference = _outcome(REFERENCE, batch, **kwargs)
    _assert_same_outcome(native, reference, messages=True)
    if against_monai and MONAI is not None:
        _assert_same_outcome(native, _outcome(MONAI, batch, **kwargs), messages=False)
    return native


def _assert_same_outcome(x: tuple[str, Any], y: tuple[str, Any], messages: bool) -> None:
    assert x[0] == y[0], f"{x} vs {y}"
    if x[0] == "ok":
        assert_same(x[1], y[1])
        return
    assert type(x[1]) is type(y[1]), f"{x[1]!r} vs {y[1]!r}"
    if messages:
        assert str(x[1]) == str(y[1])


# ---------------------------------------------------------------------------------------------------------------
# Strategies: a batch of B samples


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8]
_DTYPES += [torch.bool, torch.complex64]
_Point = collections.namedtuple("_Point", "x y")


@st.composite
def _tensors(draw: st.DrawFn, batch_size: int) -> torch.Tensor:
    dtype = draw(st.sampled_from(_DTYPES))
    rest = draw(st.lists(st.integers(0, 3), max_size=2))
    if rest and draw(st.booleans()):  # batch-first but not contiguous: strides the views must keep
        tensor = torch.randn(*rest, batch_size).movedim(-1, 0)
    else:
        tensor = torch.randn(batch_size, *rest)
    return (tensor * 10).to(dtype)


_per_sample = st.one_of(
    st.none(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=False), st.text(max_size=3)
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.binary(max_size=3),
    st.sampled_from([np.int64(3), np.float32(1.5), np.bool_(True), np.str_("np")]),
    st.builds(lambda v: torch.tensor(v), st.integers(-3, 3)),  # 0-d tensor
    st.builds(lambda v: np.array(v), st.floats(-1, 1)),  # 0-d array
)
_odd = st.sampled_from(
    [object(), complex(1, 2), frozenset({1, 2}), range(3), _Point(1, "a"), Ellipsis, b"", "", type, len]
)


def _leaves(batch_size: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        _tensors(batch_size),
        st.builds(lambda n: torch.arange(n), st.just(batch_size)),  # 1-d: per-sample numbers
        st.lists(_per_sample, min_size=batch_size, max_size=batch_size),
        st.lists(_per_sample, max_size=batch_size + 2),  # ragged
        st.builds(lambda k: np.arange(batch_size * k).reshape(batch_size, k), st.integers(0, 3)),
        _scalars,
        _odd,
    )


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.text(min_size=1, max_size=3), st.integers(0, 4))
    return st.one_of(
        st.dictionaries(keys, children, max_size=7),  # over 5 keys: the native rows are copies of the first
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=2), children, max_size=3).map(collections.OrderedDict),
        st.dictionaries(st.text(max_size=2), children, max_size=3).map(types.MappingProxyType),
        st.lists(children, max_size=3).map(collections.deque),
    )


@st.composite
def batches(draw: st.DrawFn) -> Any:
    batch_size = draw(st.integers(0, 4))
    return draw(st.recursive(_leaves(batch_size), _containers, max_leaves=8))


_options = st.fixed_dictionaries(
    {"detach": st.booleans(), "pad": st.booleans(), "fill_value": st.sampled_from([None, 0, "x", -1.5])}
)


# ---------------------------------------------------------------------------------------------------------------
# Properties


def test_the_native_module_is_built_and_used():
    assert hotloop.collate.HAS_NATIVE
    assert decollate_module._impl is NATIVE
    assert native_module.MAX_DEPTH == MAX_DEPTH


@_SETTINGS
@given(batch=batches(), options=_options)
def test_native_equals_reference_equals_monai(batch, options):
    assert_outcomes(batch, **options)


@settings(_SETTINGS, max_examples=30)
@given(batch=batches())
def test_the_public_function_is_the_native_one(batch):
    public = _outcome(hotloop.collate.decollate_batch, batch)
    _assert_same_outcome(public, _outcome(NATIVE, batch), messages=True)


# ---------------------------------------------------------------------------------------------------------------
# MetaTensor batches


def _meta(index: int, keys: list[str]) -> dict[str, Any]:
    full = {
        "filename_or_obj": f"/data/{index}.nii.gz",
        "affine": torch.eye(4, dtype=torch.float64) * (index + 1),
        "spatial_shape": np.array([4, 5, 6]) + index,
        "original_channel_dim": "no_channel",
        "index": index,
        "scale": 0.5 * index,
        "labels": ["a", f"b{index}"],
    }
    return {key: full[key] for key in keys}


@st.composite
def meta_batches(draw: st.DrawFn) -> Any:
    batch_size = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(1, 3), max_size=3))
    keys = draw(st.lists(st.sampled_from(list(_meta(0, list(_meta_keys())))), unique=True))
    ops = draw(st.integers(0, 2))
    empty_meta = draw(st.sets(st.integers(0, batch_size - 1), max_size=1))  # a sample without metadata
    as_tuple = draw(st.booleans())
    samples = []
    for i in range(batch_size):
        meta = {} if i in empty_meta else _meta(i, keys)
        trace = [{"class": "Flipd", "id": i, "extra_info": {"axes": (0,)}}] * ops
        image = MetaTensor(torch.rand(tuple(shape)), meta=meta, applied_operations=list(trace))
        label = MetaTensor(torch.full((1, 2), float(i)), meta=_meta(i, ["filename_or_obj", "affine"]))
        sample = {"image": image, "label": label, "name": f"s{i}", "plain": torch.full((2,), i)}
        samples.append((image, label, f"s{i}") if as_tuple else sample)
    return list_data_collate(samples)


def _meta_keys() -> Iterator[str]:
    return iter(["filename_or_obj", "affine", "spatial_shape", "original_channel_dim", "index", "scale", "labels"])


@requires_monai
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=meta_batches(), options=_options)
def test_metatensor_batches_from_list_data_collate(batch, options):
    kind, samples = assert_outcomes(batch, **options)
    assert kind == "ok"
    first = samples[0]["image"] if isinstance(samples[0], dict) else samples[0][0]
    if isinstance(first, MetaTensor):
        assert first.is_batch is False


@requires_monai
def test_metatensor_samples_carry_their_own_metadata():
    batch = list_data_collate(
        [{"image": MetaTensor(torch.rand(1, 3, 3), meta=_meta(i, list(_meta_keys())))} for i in range(3)]
    )
    _, samples = assert_outcomes(batch)
    for i, sample in enumerate(samples):
        image = sample["image"]
        assert type(image) is MetaTensor and image.shape == (1, 3, 3) and not image.is_batch
        assert image.meta["filename_or_obj"] == f"/data/{i}.nii.gz" and image.meta["index"] == i
        assert torch.equal(image.meta["affine"], torch.eye(4, dtype=torch.float64) * (i + 1))
        assert image.meta["labels"] == ["a", f"b{i}"]
        assert image.data_ptr() == batch["image"][i].data_ptr()  # a view, not a copy


@requires_monai
def test_metatensor_that_is_not_a_batch():
    tensor = MetaTensor(torch.rand(3, 2), meta={"a": torch.arange(3), "b": "x"}, applied_operations=[])
    assert not tensor.is_batch
    assert_outcomes(tensor)
    assert_outcomes({"t": tensor}, detach=False)


@requires_monai
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("shape", [(3,), (3, 2), ()], ids=["1d", "2d", "0d"])
def test_metatensor_shapes(shape, detach):
    if shape == ():
        tensor = MetaTensor(torch.tensor(2.5), meta={"a": 1})
    else:
        tensor = list_data_collate([MetaTensor(torch.rand(shape[1:]), meta={"i": i}) for i in range(shape[0])])
    assert_outcomes(tensor, detach=detach)


@requires_monai
def test_metatensor_without_metadata_tracking():
    batch = list_data_collate([{"image": MetaTensor(torch.rand(2), meta={"i": i})} for i in range(2)])
    tracking = get_track_meta()
    set_track_meta(False)
    try:
        for detach in (True, False):
            assert_outcomes(batch, detach=detach)
    finally:
        set_track_meta(tracking)


@requires_monai
def test_metatensor_requiring_grad():
    base = torch.rand(2, 3, requires_grad=True)
    batch = list_data_collate([MetaTensor(base[i] * 2, meta={"i": i}) for i in range(2)])
    _, detached = assert_outcomes(batch)
    assert not detached[0].requires_grad
    _, attached = assert_outcomes(batch, detach=False)
    (attached[0].sum() + attached[1].sum() * 3).backward()
    assert torch.equal(base.grad, torch.tensor([[2.0] * 3, [6.0] * 3]))


@requires_monai
def test_a_metatensor_in_a_cycle_through_its_metadata():
    batch = list_data_collate([MetaTensor(torch.rand(2), meta={"i": i}) for i in range(2)])
    batch.meta["self"] = batch
    for fn in (NATIVE, REFERENCE):
        with pytest.raises(ValueError, match=r"batch\.meta\['self'\] is the same MetaTensor object as batch:"):
            fn(batch)


# ---------------------------------------------------------------------------------------------------------------
# Documented behaviour (MONAI's docstring) and edge cases


def test_monai_docstring_examples():
    _, out = assert_outcomes({"image": torch.rand((2, 1, 10, 10)), "meta": {"scl_slope": torch.Tensor([0.0, 0.0])}})
    assert len(out) == 2 and out[0]["meta"] == {"scl_slope": 0.0}
    _, out = assert_outcomes([torch.rand((2, 1, 10, 10)), torch.rand((2, 3, 5, 5))])
    assert [t.shape for t in out[0]] == [(1, 10, 10), (3, 5, 5)]
    batch = {"image": [1, 2, 3], "meta": [4, 5]}
    padded = [{"image": 1, "meta": 4}, {"image": 2, "meta": 5}, {"image": 3, "meta": 0}]
    assert assert_outcomes(batch, fill_value=0)[1] == padded
    assert assert_outcomes(batch, pad=False)[1] == [{"image": 1, "meta": 4}, {"image": 2, "meta": 5}]


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        (None, None),
        (3, 3),
        ("text", "text"),
        (b"raw", b"raw"),
        ({}, {}),
        ([], []),
        ((), []),
        ({"a": 1, "b": "x"}, {"a": 1, "b": "x"}),  # nothing batched: the mapping comes back
        ({"x": {"a": 1, "b": 2}}, [{"x": "a"}, {"x": "b"}]),  # MONAI zips the inner dict's keys
        ({"n": ["p"], "k": 5}, [{"n": "p", "k": 5}]),  # batch size 1
        (np.array([[1, 2], [3, 4]]), [[1, 3], [2, 4]]),  # a NumPy array is walked as nested lists
        ({"t": torch.tensor(7)}, {"t": 7}),
    ],
    ids=repr,
)
def test_edge_cases(batch, expected):
    _, out = assert_outcomes(batch)
    assert out == expected


def test_unbatched_values_are_repeated_with_pad_and_strings_are_zipped_without():
    batch = {"t": torch.rand(2, 3), "name": "abc", "none": None}
    _, out = assert_outcomes(batch)
    assert [(s["name"], s["none"]) for s in out] == [("abc", None), ("abc", None)]
    _, out = assert_outcomes({"t": torch.rand(2, 3), "name": "abc"}, pad=False)
    assert [s["name"] for s in out] == ["a", "b"]  # MONAI zips the string's characters


def test_detach_gives_numbers_for_0d_and_1d_and_keeps_the_graph_without():
    base = torch.rand(3, 2, requires_grad=True)
    batch = {"x": base * 2, "v": base.sum(1), "s": base.sum()}
    _, out = assert_outcomes(batch)
    assert isinstance(out[0]["v"], float) and isinstance(out[0]["s"], float) and not out[0]["x"].requires_grad
    del batch["s"]  # detach=False: a 0-d non-leaf is repeated by deepcopy, which autograd refuses (all three)
    _, out = assert_outcomes(batch, detach=False)
    assert out[0]["x"].requires_grad and out[0]["v"].ndim == 0
    sum(sample["x"].sum() for sample in out).backward()
    assert torch.equal(base.grad, torch.full((3, 2), 2.0))


@pytest.mark.parametrize("pad", [True, False])
def test_rows_of_mappings_with_many_keys_keep_their_keys_and_order(pad):
    # More keys than a new dict holds without resizing: the native module copies the first row's key table.
    keys = ["image", 3, ("a", 1), "label", 0, "name", None, 2.5, "extra"]
    values = [torch.rand(3, 2), [1, 2, 3], [b"a", b"b", b"c"], torch.tensor([4, 5, 6]), [None, "x"], ["p", "q", "r"]]
    values += [[7, 8, 9], torch.rand(3, 1, 1), [[1], [2, 3], []] if pad else [[1, 2], [3, 4], [5, 6]]]
    if pad:  # values with no batch dimension, repeated per sample
        keys += ["s", 8, "zero_d"]
        values += ["s", 7, torch.tensor(1.5)]
    batch = dict(zip(keys, values))
    _, out = assert_outcomes(batch, pad=pad, fill_value="fill")
    assert [list(row) for row in out] == [keys] * len(out)
    assert out[0] is not out[1] and out[1]["image"].data_ptr() == batch["image"][1].data_ptr()


@pytest.mark.parametrize("detach", [True, False])
def test_1d_tensors_inside_containers_whose_numbers_come_from_item(detach):
    # uint16 and uint32 are not in the native module's exact-tolist dtypes: unbind, then .item() per sample.
    batch = {"u16": torch.arange(3).to(torch.uint16), "u32": [torch.arange(3).to(torch.uint32), ["k", "l", "m"]]}
    _, out = assert_outcomes(batch, detach=detach)
    assert isinstance(out[2]["u16"], int) if detach else out[2]["u16"].ndim == 0


@pytest.mark.parametrize("dtype", _DTYPES)
def test_1d_tensors_give_the_numbers_item_gives(dtype):
    tensor = (torch.randn(5) * 100).to(dtype)
    _, out = assert_outcomes(tensor)
    expected = [t.item() for t in tensor.unbind(0)]
    assert [type(v) for v in out] == [type(v) for v in expected] and out == expected


@requires_monai
def test_a_generator_is_walked_once():
    outs = [fn({"g": (i for i in range(3)), "n": "x"}) for fn in (NATIVE, REFERENCE, MONAI)]
    assert outs[0] == outs[1] == outs[2] == [{"g": 0, "n": "x"}, {"g": 1, "n": "x"}, {"g": 2, "n": "x"}]


@requires_monai
def test_under_a_torch_function_mode_the_mode_sees_the_calls():
    from torch.overrides import TorchFunctionMode

    class Recorder(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    batch = {"x": torch.rand(2, 3), "y": torch.arange(2)}
    recorded = []
    for fn in (NATIVE, MONAI):
        with Recorder() as mode:
            out = fn(batch)
        recorded.append(("unbind" in mode.names, "item" in mode.names))
        assert_same(out, MONAI(batch))
    assert recorded[0] == recorded[1] == (True, True)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a clear Python exception, never a crash


class _Opaque:
    pass


class _FailingIterable:
    def __iter__(self):
        raise KeyError("no iteration today")


class _FailingMapping(collections.abc.Mapping):
    def __getitem__(self, key):
        raise LookupError(f"no item {key!r}")

    def __iter__(self):
        return iter(["a"])

    def __len__(self):
        return 1


@pytest.mark.parametrize(
    ("batch", "kwargs", "error", "message"),
    [
        ({"a": [_Opaque()]}, {}, NotImplementedError, r"batch\['a'\]\[0\] \(_Opaque\) is not a tensor"),
        (_Opaque(), {}, NotImplementedError, r"batch \(_Opaque\) is not a tensor"),
        (complex(1, 2), {}, NotImplementedError, r"\(complex\)"),
        ({"a": [1, 2], "b": 3}, {"pad": False}, TypeError, r"pad=False\): batch\['b'\] \(int\) has no batch dim"),
        ([torch.rand(2), None], {"pad": False}, TypeError, r"batch\[1\] \(NoneType\) has no batch dimension"),
        ({"t": torch.rand(0, 3)}, {}, IndexError, r"batch\['t'\] is a tensor with batch size 0 \(shape \(0, 3\)\)"),
        ([torch.arange(0)], {}, IndexError, r"batch\[0\] is a tensor with batch size 0 \(shape \(0,\)\)"),
        ({"x": _FailingIterable()}, {}, KeyError, "no iteration today"),
        (_FailingMapping(), {}, LookupError, "no item 'a'"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else value[:12],
)
def test_bad_input_raises_a_clear_exception(batch, kwargs, error, message):
    kind, raised = assert_outcomes(batch, **kwargs)  # MONAI raises the same type
    assert kind == "raised" and type(raised) is error
    assert re.search(message, str(raised)), str(raised)


def test_the_pad_false_type_error_keeps_the_original_as_its_cause():
    for fn in (NATIVE, REFERENCE):
        with pytest.raises(TypeError) as info:
            fn({"a": [1, 2], "b": 3}, pad=False)
        assert isinstance(info.value.__cause__, TypeError) and "not iterable" in str(info.value.__cause__)


def _cycles() -> list[tuple[Any, str]]:
    looped_list: list[Any] = [1, 2]
    looped_list.append(looped_list)
    looped_dict: dict[str, Any] = {"t": torch.rand(2)}
    looped_dict["inner"] = [looped_dict]
    return [
        (looped_list, r"batch\[2\] is the same list object as batch: the batch contains a reference cycle"),
        (looped_dict, r"batch\['inner'\]\[0\] is the same dict object as batch:"),
    ]


@pytest.mark.parametrize(("batch", "message"), _cycles(), ids=["list", "dict"])
def test_cycles_raise_value_error(batch, message):
    native = _outcome(NATIVE, batch)
    _assert_same_outcome(native, _outcome(REFERENCE, batch), messages=True)
    assert type(native[1]) is ValueError and re.search(message, str(native[1]))
    if MONAI is not None:
        with pytest.raises(RecursionError):  # MONAI recurses until Python's limit: the documented difference
            MONAI(batch)


def test_nesting_deeper_than_max_depth_raises_recursion_error():
    fits: Any = torch.rand(2, 1)
    for _ in range(MAX_DEPTH):
        fits = [fits]
    assert_outcomes(fits, against_monai=False)  # MONAI needs ~3 Python frames a level: over the default limit
    too_deep = [fits]
    kind, raised = assert_outcomes(too_deep, against_monai=False)
    assert kind == "raised" and type(raised) is RecursionError
    assert f"is nested deeper than {MAX_DEPTH} containers" in str(raised)


def test_exceptions_from_deepcopy_propagate():
    class NoCopy:
        def __deepcopy__(self, memo):
            raise RuntimeError("cannot copy")

    # A 0-d object array decollates to its item, which has no batch dimension: pad deep-copies it per sample.
    kind, raised = assert_outcomes({"t": torch.rand(2, 1), "n": np.array(NoCopy(), dtype=object)})
    assert kind == "raised" and type(raised) is RuntimeError and str(raised) == "cannot copy"
    assert_outcomes({"t": torch.rand(2, 1), "x": torch.tensor(1.0, requires_grad=True) * 2}, detach=False)


# ---------------------------------------------------------------------------------------------------------------
# Without the native module


@pytest.fixture
def without_native(monkeypatch):
    monkeypatch.setitem(sys.modules, "hotloop.collate._decollate", None)  # import fails: ImportError
    module = importlib.reload(decollate_module)
    try:
        yield module
    finally:
        monkeypatch.undo()
        importlib.reload(decollate_module)


def test_without_the_native_module_the_reference_runs_with_one_warning(without_native):
    assert without_native.HAS_NATIVE is False
    batch = {"x": torch.rand(2, 3), "n": ["a", "b"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = hotloop.collate.decollate_batch(batch)
        second = hotloop.collate.decollate_batch(batch)
    assert len(caught) == 1 and caught[0].category is RuntimeWarning
    assert "pure-Python reference" in str(caught[0].message) and caught[0].filename == __file__
    assert without_native._impl is REFERENCE
    assert_same(first, NATIVE(batch))
    assert_same(second, first)
