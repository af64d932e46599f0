"""Type stub of the native module built from csrc/ (see hotloop.collate.decollate)."""

from typing import Any

MAX_DEPTH: int

def decollate_batch(batch: Any, detach: Any = True, pad: Any = True, fill_value: Any = None) -> Any: ...
