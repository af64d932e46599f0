"""``hotloop._optional``: probes, the one message format, and the modules that refuse to import without their extra."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from hotloop._optional import (
    DALI,
    MATPLOTLIB,
    MONAI,
    PILLOW,
    SKLEARN,
    TQDM,
    TRITON,
    Requirement,
    missing,
    missing_message,
    require,
)

_ABSENT = Requirement("hotloop_no_such_module", "no-such-package", "nothing")
_ABSENT_CHILD = Requirement("hotloop_no_such_parent.child", "no-such-child", "other")


def test_probes_find_what_is_there_and_not_what_is_not():
    assert Requirement("json", "json", "none").installed()
    assert not _ABSENT.installed()
    assert not _ABSENT_CHILD.installed()  # a missing parent package is "not installed", not an exception


def test_each_requirement_is_declared_in_its_extra_and_all_has_every_extra():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    for need in (DALI, MONAI, PILLOW, SKLEARN, TQDM, TRITON, MATPLOTLIB):
        names = [re.split(r"[<>=;\[ ]", spec)[0].lower() for spec in extras[need.extra]]
        assert need.package.lower() in names, f"{need.package} is not in the [{need.extra}] extra: {names}"
    in_all = {name for spec in extras["all"] for name in re.search(r"hotloop\[(.*)\]", spec)[1].split(",")}
    assert in_all == set(extras) - {"all", "test"}


def test_missing_keeps_order_and_drops_installed():
    json_need = Requirement("json", "json", "none")
    assert missing(_ABSENT, json_need, _ABSENT_CHILD) == [_ABSENT, _ABSENT_CHILD]
    assert missing(json_need) == []


def test_message_names_each_package_and_the_extras():
    assert missing_message("a feature", _ABSENT) == (
        "a feature needs no-such-package, which is not installed: pip install 'hotloop[nothing]'"
    )
    assert missing_message("a feature", _ABSENT, _ABSENT_CHILD) == (
        "a feature needs no-such-package and no-such-child, which are not installed: "
        "pip install 'hotloop[nothing,other]'"
    )
    assert missing_message("x", _ABSENT, _ABSENT_CHILD, extra="bench").endswith("pip install 'hotloop[bench]'")
    assert missing_message("x", Requirement("json", "json", "none")) is None


def test_require_raises_module_not_found_naming_the_first_missing_module():
    with pytest.raises(ModuleNotFoundError, match=r"needs no-such-package, .* 'hotloop\[nothing\]'") as raised:
        require("this test", Requirement("json", "json", "none"), _ABSENT)
    assert raised.value.name == "hotloop_no_such_module"
    require("this test", Requirement("json", "json", "none"))  # installed: no error


@pytest.mark.parametrize("name", ["postprocess", "stats"])
def test_kernel_modules_without_triton_name_the_extra(name, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now fails as it does where it is missing
    monkeypatch.setitem(sys.modules, "triton.language", None)
    for module in ("hotloop.kernels.postprocess", "hotloop.kernels.stats"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ModuleNotFoundError) as raised:
        importlib.import_module(f"hotloop.kernels.{name}")
    assert str(raised.value) == (
        f"hotloop.kernels.{name} (Triton kernels) needs triton, which is not installed: pip install 'hotloop[triton]'"
    )
    assert raised.value.name == "triton"
