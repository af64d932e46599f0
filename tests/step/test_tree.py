"""``hotloop.step.tree``: the walkers over nested batches shared by the prefetcher, the steps and distributed eval."""

from __future__ import annotations

from collections import OrderedDict, defaultdict, namedtuple
from types import MappingProxyType

import pytest
import torch

from hotloop.step.tree import (
    CONSTANT_TYPES,
    OPAQUE,
    tree_clone,
    tree_copy_,
    tree_key,
    tree_layout,
    tree_leaves,
    tree_map,
    tree_tensors,
)

Pair = namedtuple("Pair", "x y")


class Tagged(list):
    """A list subclass with an attribute: rebuilt as the same type, attribute kept."""

    tag = "default"


def _batch() -> dict:
    tagged = Tagged([torch.ones(2), "name"])
    tagged.tag = "kept"
    return {
        "pair": Pair(torch.zeros(2, 3), torch.arange(3)),
        "list": tagged,
        "nested": OrderedDict(b=(torch.full((1,), 5.0), 7), a=None),
        "constant": 1.5,
    }


def test_map_applies_fn_to_every_tensor_and_keeps_container_types() -> None:
    batch = _batch()
    out = tree_map(lambda t: t + 1, batch)
    assert type(out) is dict and list(out) == list(batch)
    assert type(out["pair"]) is Pair and torch.equal(out["pair"].x, torch.ones(2, 3))
    assert type(out["list"]) is Tagged and out["list"].tag == "kept" and out["list"][1] == "name"
    assert type(out["nested"]) is OrderedDict and list(out["nested"]) == ["b", "a"]
    assert torch.equal(out["nested"]["b"][0], torch.full((1,), 6.0)) and out["nested"]["b"][1] == 7
    assert out["constant"] == 1.5 and out["nested"]["a"] is None
    assert torch.equal(batch["pair"].x, torch.zeros(2, 3)), "the input is not modified"


def test_map_keeps_a_defaultdicts_factory_and_rebuilds_other_mappings() -> None:
    counts: defaultdict[str, list] = defaultdict(list, {"x": torch.ones(1)})
    out = tree_map(torch.neg, counts)
    assert type(out) is defaultdict and out.default_factory is list and torch.equal(out["x"], -torch.ones(1))
    proxy = tree_map(torch.neg, MappingProxyType({"x": torch.ones(1)}))
    assert type(proxy) is MappingProxyType and torch.equal(proxy["x"], -torch.ones(1))


def test_leaves_and_tensors_in_a_fixed_order() -> None:
    batch = _batch()
    leaves = list(tree_leaves(batch))
    assert [type(leaf) for leaf in leaves] == [torch.Tensor, torch.Tensor, torch.Tensor, str, torch.Tensor, int] + [
        type(None),
        float,
    ]
    tensors = tree_tensors(batch)
    assert [t.shape for t in tensors] == [(2, 3), (3,), (2,), (1,)]
    assert tensors[0] is batch["pair"].x


def test_clone_makes_detached_copies_in_new_memory_with_the_same_strides() -> None:
    base = torch.randn(4, 6, requires_grad=True)
    view = base.t()  # non-contiguous
    out = tree_clone({"v": view, "k": "const"})
    assert not out["v"].requires_grad and out["v"].stride() == view.stride()
    assert out["v"].data_ptr() != view.data_ptr() and torch.equal(out["v"], view.detach())
    assert out["k"] == "const"


def test_copy_writes_into_the_destination_tensors() -> None:
    dst = {"a": [torch.zeros(2), torch.zeros(3)], "b": torch.zeros(1)}
    ptrs = [t.data_ptr() for t in tree_tensors(dst)]
    tree_copy_(dst, {"a": [torch.ones(2), torch.full((3,), 2.0)], "b": torch.full((1,), 3.0)})
    assert [t.data_ptr() for t in tree_tensors(dst)] == ptrs
    assert [t.tolist() for t in tree_tensors(dst)] == [[1.0, 1.0], [2.0, 2.0, 2.0], [3.0]]


def test_layout_holds_host_metadata_and_collects_constants() -> None:
    constants: list = []
    layout = tree_layout((torch.zeros(2, 3), {"n": 4, "s": "x"}, object()), constants)
    assert constants == [4, "x"]
    tensor_part, dict_part, opaque_part = layout[1:]
    assert tensor_part == (torch.Tensor, torch.Size([2, 3]), torch.float32, torch.device("cpu"), False)
    assert dict_part == (dict, ("n", (int,)), ("s", (str,)))
    assert opaque_part == (OPAQUE, object)
    assert int in CONSTANT_TYPES and torch.Tensor not in CONSTANT_TYPES


@pytest.mark.parametrize(
    "other",
    [
        (torch.zeros(2, 4), 1),  # shape
        (torch.zeros(2, 3, dtype=torch.float64), 1),  # dtype
        (torch.zeros(2, 3, requires_grad=True), 1),  # requires_grad
        (torch.nn.Parameter(torch.zeros(2, 3)), 1),  # tensor subclass
        [torch.zeros(2, 3), 1],  # container type
    ],
)
def test_key_tells_apart_what_a_compiled_or_captured_step_cannot_share(other) -> None:
    first = tree_key((torch.zeros(2, 3), 1))
    assert first == tree_key((torch.ones(2, 3), 1)), "values do not matter"
    assert tree_key(other) != first
    layout, constants = tree_key((torch.zeros(2, 3), 2))
    assert layout == first[0] and constants != first[1], "a constant changes the constants, not the layout"
