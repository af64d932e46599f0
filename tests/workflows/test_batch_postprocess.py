"""``hotloop.workflows._postprocess`` against MONAI: decollate, the transform on each sample dict, stack.

``exact=True`` must give MONAI's values and dtypes bit for bit, on random logits, on logits full of ties and on logits
holding NaN.
``exact=False`` (fused chains) must agree to an ulp on logits whose classes are at least 1 apart, and bit for bit on
half-precision scores (whose chains stay exact).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import torch

from hotloop.workflows._postprocess import BatchPostprocessing, batch_postprocessing

monai = pytest.importorskip("monai")
from monai.data import decollate_batch  # noqa: E402 - after the importorskip
from monai.transforms import (  # noqa: E402
    Activations,
    Activationsd,
    AsDiscreted,
    Compose,
    CopyItemsd,
    Identityd,
    KeepLargestConnectedComponentd,
    Lambdad,
)

CHANNELS = [1, 2, 3]
DTYPES = [torch.float32, torch.float16, torch.float64]
BATCH = 2

# name → builder of the postprocessing for C classes
CASES: dict[str, Callable[[int], Any]] = {
    "sigmoid_threshold": lambda c: Compose([Activationsd("pred", sigmoid=True), AsDiscreted("pred", threshold=0.5)]),
    "softmax_argmax": lambda c: Compose([Activationsd("pred", softmax=True), AsDiscreted("pred", argmax=True)]),
    "softmax_onehot_label_onehot": lambda c: Compose(
        [
            Activationsd("pred", softmax=True),
            AsDiscreted("pred", argmax=True, to_onehot=c),
            AsDiscreted("label", to_onehot=c),
        ]
    ),
    "per_key_sequences": lambda c: Compose(
        [
            Activationsd(["pred", "image"], sigmoid=[False, True], softmax=[True, False]),
            AsDiscreted(["pred", "label"], argmax=[True, False], to_onehot=[c, c], threshold=[None, 0.5]),
        ]
    ),
    "argmax_no_keepdim": lambda c: AsDiscreted("pred", argmax=True, keepdim=False),
    "argmax_threshold": lambda c: AsDiscreted("pred", argmax=True, threshold=0.5),
    "threshold_rounding_dtype": lambda c: AsDiscreted(
        ["pred", "image"], threshold=[0.2, None], rounding=[None, "torchrounding"], dtype=torch.float16
    ),
    "label_onehot_uint8": lambda c: AsDiscreted("label", to_onehot=c, dtype=torch.uint8),
    "last_dim": lambda c: Compose(
        [Activationsd("pred", softmax=True, dim=-1), AsDiscreted("pred", argmax=True, dim=-1)]
    ),
    "copy_lambda_identity": lambda c: Compose(
        [
            CopyItemsd("pred", names="prob"),
            Lambdad("prob", torch.sigmoid),
            Lambdad("image", torch.abs, overwrite="abs_image"),
            Identityd("label"),
            Activationsd("pred", softmax=True),
            AsDiscreted("pred", argmax=True, to_onehot=c),
        ]
    ),
    "missing_allowed": lambda c: Compose(
        [
            Activationsd(["pred", "absent"], softmax=True, allow_missing_keys=True),
            AsDiscreted(["absent", "pred"], argmax=True, to_onehot=c, allow_missing_keys=True),
        ]
    ),
    "nested_compose": lambda c: Compose(
        [Compose([Activationsd("pred", sigmoid=True)]), AsDiscreted("pred", threshold=0.7)]
    ),
    "activation_noop": lambda c: Activationsd("pred"),
}


def _data(channels: int, spatial: tuple[int, ...], dtype: torch.dtype, kind: str, seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    shape = (BATCH, channels, *spatial)
    if kind == "randn":
        pred = torch.randn(shape, generator=generator)
    elif kind == "ties":  # small integers: equal logits, argmax ties everywhere
        pred = torch.randint(-2, 3, shape, generator=generator).float()
    elif kind == "nan":  # NaN scores: torch.argmax picks the first NaN channel
        pred = torch.randn(shape, generator=generator)
        pred.view(-1)[torch.randperm(pred.numel(), generator=generator)[: pred.numel() // 5]] = float("nan")
    else:  # "separated": classes at least 1 apart per voxel (no near-ties for the fused argmax)
        order = torch.rand(shape, generator=generator).argsort(dim=1).float()
        pred = order + 0.2 * torch.rand(shape, generator=generator) - channels / 2
    return {
        "image": torch.randn(BATCH, 1, *spatial, generator=generator),
        "label": torch.randint(0, channels, (BATCH, 1, *spatial), generator=generator).float(),
        "pred": pred.to(dtype),
    }


def _plain(value: Any) -> Any:
    return value.as_tensor() if hasattr(value, "as_tensor") else value


def _monai(transform: Any, data: dict[str, Any]) -> dict[str, Any]:
    samples = [transform(sample) for sample in decollate_batch(data, detach=True)]
    return {key: torch.stack([_plain(sample[key]) for sample in samples]) for key in samples[0]}


def _assert_same(ours: dict[str, Any], theirs: dict[str, Any], exact: bool) -> None:
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert type(ours[key]) is torch.Tensor, key
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        # bit for bit with exact (NaN where MONAI has NaN), to an ulp otherwise
        tolerance = {"rtol": 0.0, "atol": 0.0, "equal_nan": True} if exact else {}
        try:
            torch.testing.assert_close(ours[key], value, **tolerance)
        except AssertionError as error:
            raise AssertionError(f"{key}: {error}") from error


# (spatial shape, logits, dtype): every dtype on random logits, ties and NaN in float32, one 2D shape
DATA = [((3, 4, 5), "randn", dtype) for dtype in DTYPES] + [
    ((3, 4, 5), "ties", torch.float32),
    ((3, 4, 5), "nan", torch.float32),
    ((6, 7), "randn", torch.float32),
]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("channels", CHANNELS)
def test_exact_matches_monai(case, channels):
    transform = CASES[case](channels)
    fn = batch_postprocessing(transform)
    assert isinstance(fn, BatchPostprocessing)
    for spatial, kind, dtype in DATA:
        data = _data(channels, spatial, dtype, kind)
        try:
            _assert_same(fn(data), _monai(transform, data), exact=True)
        except AssertionError as error:
            raise AssertionError(f"{spatial} {kind} {dtype}: {error}") from error


# "last_dim" takes the softmax / argmax over a spatial dim, where the data are not separated: near-ties there.
@pytest.mark.parametrize("case", [case for case in CASES if case != "last_dim"])
@pytest.mark.parametrize("channels", CHANNELS)
def test_fused_matches_monai_without_near_ties(case, channels):
    transform = CASES[case](channels)
    fn = batch_postprocessing(transform, exact=False)
    assert fn is not None
    for dtype in (torch.float32, torch.float16):
        data = _data(channels, (3, 4, 5), dtype, "separated")
        _assert_same(fn(data), _monai(transform, data), exact=False)


@pytest.mark.parametrize("case", ["softmax_argmax", "sigmoid_threshold", "softmax_onehot_label_onehot"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_keeps_monais_bits_for_half_scores(case, dtype):
    # MONAI rounds half probabilities before its argmax / threshold: ties are common, so the chain runs exactly.
    transform = CASES[case](3)
    fused = batch_postprocessing(transform, exact=False)
    data = _data(3, (6, 7, 8), dtype, "randn")
    # Logits one ulp apart, near 0: distinct, but their probabilities round to the same half value (MONAI's argmax
    # then takes the first channel, an argmax of the logits the last).
    channels = [(0.1 * torch.randn(BATCH, 1, 6, 7, 8, generator=torch.Generator().manual_seed(3))).to(dtype)]
    for _ in range(2):
        channels.append(torch.nextafter(channels[-1], torch.full_like(channels[-1], float("inf"))))
    data["pred"] = torch.cat(channels, dim=1)
    _assert_same(fused(data), _monai(transform, data), exact=True)


@pytest.mark.parametrize("exact", [True, False])
def test_activation_and_discretization_of_a_key_are_one_step(exact):
    transform = CASES["softmax_onehot_label_onehot"](3)
    assert len(batch_postprocessing(transform, exact=exact).steps) == 2  # softmax → argmax → one-hot: one step
    transform = Compose([Activationsd("pred", softmax=True), CopyItemsd("pred"), AsDiscreted("pred", argmax=True)])
    assert len(batch_postprocessing(transform, exact=exact).steps) == 3  # the copy reads the probabilities


def test_int_logits_are_rounded_like_monai():
    # MONAI casts the activation back to the input's integer dtype: the fused path must not shortcut it
    data = {"pred": torch.randint(-3, 4, (BATCH, 3, 4, 5))}
    transform = Compose([Activationsd("pred", softmax=True), AsDiscreted("pred", argmax=True, to_onehot=3)])
    for exact in (True, False):
        _assert_same(batch_postprocessing(transform, exact=exact)(data), _monai(transform, data), exact=True)


def test_none_copies_the_dict():
    data = {"pred": torch.zeros(2, 1), "loss": 1.5}
    out = batch_postprocessing(None)(data)
    assert out == data and out is not data


def test_runs_on_the_batch_without_monai_transforms(monkeypatch):
    transform = CASES["softmax_onehot_label_onehot"](3)
    fn = batch_postprocessing(transform)

    def forbidden(*args, **kwargs):
        raise AssertionError("the batch function called a MONAI transform")

    for cls in (Activationsd, AsDiscreted, Compose):
        monkeypatch.setattr(cls, "__call__", forbidden)
    out = fn(_data(3, (4, 4, 4), torch.float32, "randn"))
    assert out["pred"].shape == out["label"].shape == (BATCH, 3, 4, 4, 4)


def test_no_host_read(monkeypatch):
    fn = batch_postprocessing(CASES["softmax_onehot_label_onehot"](3))
    data = _data(3, (4, 4, 4), torch.float32, "randn")

    def forbidden(self, *args, **kwargs):
        raise AssertionError("host read")

    expected = fn(dict(data))
    for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    out = fn(data)  # raises on any host read
    monkeypatch.undo()
    assert out.keys() == expected.keys()
    for key in expected:
        assert torch.equal(out[key], expected[key]), key


def test_missing_key_raises_monai_error():
    transform = Activationsd(["pred", "absent"], softmax=True)
    data = _data(2, (4, 4), torch.float32, "randn")
    with pytest.raises(KeyError) as theirs:
        transform(decollate_batch(data)[0])
    with pytest.raises(KeyError) as ours:
        batch_postprocessing(Compose([transform]))(data)
    assert str(ours.value) == str(theirs.value)


def test_existing_copy_target_raises_like_monai():
    with pytest.raises(KeyError, match="already exists"):
        batch_postprocessing(CopyItemsd("pred", names="image"))(_data(2, (4, 4), torch.float32, "randn"))


def test_out_of_range_sample_dim_raises():
    fn = batch_postprocessing(AsDiscreted("pred", argmax=True, dim=-4))  # samples are [C, H, W]: dims -3..2
    with pytest.raises(IndexError, match="Dimension out of range"):
        fn(_data(2, (4, 4), torch.float32, "randn"))


def test_non_tensor_value_raises():
    with pytest.raises(TypeError, match="'pred' should hold a batched torch.Tensor, got list"):
        batch_postprocessing(Activationsd("pred", sigmoid=True))({"pred": [1.0, 2.0]})


class _MyActivationsd(Activationsd):
    pass


UNSUPPORTED = {
    "other_callable": lambda: Activationsd("pred", other=torch.tanh),
    "sigmoid_and_softmax": lambda: Activationsd("pred", sigmoid=True, softmax=True),
    "lambda_function": lambda: Lambdad("pred", lambda x: x * 2),
    "unpack_items": lambda: Compose([Activationsd("pred", sigmoid=True)], unpack_items=True),
    "lazy": lambda: Compose([Activationsd("pred", sigmoid=True)], lazy=True),
    "subclass": lambda: _MyActivationsd("pred", sigmoid=True),
    "array_transform": lambda: Activations(softmax=True),
    "plain_function": lambda: lambda data: data,
    "unknown_transform": lambda: KeepLargestConnectedComponentd("pred"),
    "one_unknown_in_compose": lambda: Compose(
        [Activationsd("pred", softmax=True), KeepLargestConnectedComponentd("pred")]
    ),
    "unknown_rounding": lambda: AsDiscreted("pred", rounding="bankers"),
    "numpy_dtype": lambda: AsDiscreted("pred", threshold=0.5, dtype=__import__("numpy").float32),
    "non_int_onehot": lambda: AsDiscreted("pred", to_onehot=2.0),
    "tuple_dim": lambda: AsDiscreted("pred", argmax=True, dim=(0,)),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_returns_none(name):
    assert batch_postprocessing(UNSUPPORTED[name]()) is None


def test_rejects_non_bool_exact():
    with pytest.raises(TypeError, match="exact should be a bool"):
        batch_postprocessing(None, exact=1)  # type: ignore[arg-type]


def test_without_monai_only_none_translates():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["monai"] = None  # find_spec -> None, import -> ImportError
        import torch
        from hotloop.workflows._postprocess import HAS_MONAI, batch_postprocessing
        assert not HAS_MONAI
        data = {"pred": torch.ones(2, 3)}
        out = batch_postprocessing(None)(data)
        assert out == data and out is not data
        assert batch_postprocessing(lambda d: d) is None
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
