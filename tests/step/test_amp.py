"""``hotloop.step.amp``: the one autocast helper of every API's step."""

from __future__ import annotations

import contextlib
import re
from typing import Any
from unittest import mock

import pytest
import torch

from hotloop.step.amp import NO_AUTOCAST, Autocast


class _Recorder:
    """Stands in for ``torch.autocast``: records its arguments, is a no-op context."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> contextlib.nullcontext:
        self.calls.append((args, kwargs))
        return contextlib.nullcontext()


def test_no_autocast_is_a_null_context() -> None:
    assert not NO_AUTOCAST.enabled
    with NO_AUTOCAST(), NO_AUTOCAST(cache_enabled=False):
        assert not torch.is_autocast_enabled()
    assert Autocast.ignite(False) is NO_AUTOCAST and Autocast.cuda(False, dtype=torch.float16) is NO_AUTOCAST


def test_the_keyword_arguments_reach_autocast_and_a_capture_turns_the_cache_off() -> None:
    recorder = _Recorder()
    amp = Autocast(recorder, dtype=torch.bfloat16)
    with amp():
        pass
    with amp(cache_enabled=False):
        pass
    assert recorder.calls == [
        (("cuda",), {"dtype": torch.bfloat16}),
        (("cuda",), {"dtype": torch.bfloat16, "cache_enabled": False}),
    ]
    assert amp.enabled


def test_ignites_autocast_is_imported_when_the_step_is_built() -> None:
    recorder = _Recorder()
    with mock.patch("torch.amp.autocast", recorder):  # what Ignite's tests patch
        amp = Autocast.ignite(True)
    with amp():
        pass
    assert recorder.calls == [(("cuda",), {"enabled": True, "cache_enabled": True})]


def test_ignites_import_error_when_torch_amp_is_missing() -> None:
    with mock.patch.dict("sys.modules", {"torch.amp": None}):
        with pytest.raises(ImportError, match=re.escape("Please install torch>=1.12.0 to use amp_mode='amp'.")):
            Autocast.ignite(True)
