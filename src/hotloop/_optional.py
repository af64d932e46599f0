"""hotloop's optional dependencies: which package and which extra each feature needs, and the error that says so.

Every place that needs an optional package checks it here, before it starts any work, and raises one
``ModuleNotFoundError`` that names the missing packages and the extra that installs them (Ignite's
``handlers/tensorboard_logger.py`` manner)::

    require("hotloop demo (scikit-learn's digits)", SKLEARN, TQDM)
    # ModuleNotFoundError: hotloop demo (scikit-learn's digits) needs scikit-learn and tqdm, which are not
    # installed: pip install 'hotloop[bench]'

Probes use ``importlib.util.find_spec``: nothing is imported (``import nvidia.dali`` or ``import triton`` alone takes
about 0.8 s on the 2-core dev machine). The extras themselves are declared in ``pyproject.toml``; the README's
"Install" section has the table.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

__all__ = [
    "DALI",
    "LIGHTNING",
    "MATPLOTLIB",
    "MONAI",
    "PILLOW",
    "SKLEARN",
    "TQDM",
    "TRITON",
    "Requirement",
    "missing",
    "missing_message",
    "require",
]


@dataclass(frozen=True)
class Requirement:
    """An optional package: how it is imported, how it is installed, and the hotloop extra that installs it.

    Args:
        module: The import name (``"sklearn"``, ``"nvidia.dali"``).
        package: The name to ``pip install`` (``"scikit-learn"``).
        extra: hotloop's extra that installs it (``"bench"`` for ``pip install 'hotloop[bench]'``).
    """

    module: str
    package: str
    extra: str

    def installed(self) -> bool:
        """Whether the module can be found (without importing it)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a missing parent package (``nvidia`` for ``nvidia.dali``) or a broken one
            return False

    def error(self, feature: str) -> ModuleNotFoundError:
        """The error to raise when ``feature`` needs this package and it is missing."""
        return ModuleNotFoundError(_message(feature, [self], self.extra), name=self.module)


SKLEARN = Requirement("sklearn", "scikit-learn", "bench")
TQDM = Requirement("tqdm", "tqdm", "bench")
MATPLOTLIB = Requirement("matplotlib", "matplotlib", "bench")
LIGHTNING = Requirement("lightning", "lightning", "bench")
PILLOW = Requirement("PIL", "Pillow", "images")
MONAI = Requirement("monai", "monai", "monai")
DALI = Requirement("nvidia.dali", "nvidia-dali-cuda120", "dali")
TRITON = Requirement("triton", "triton", "triton")


def missing(*needs: Requirement) -> list[Requirement]:
    """The requirements among ``needs`` that are not installed, in the order given."""
    return [need for need in needs if not need.installed()]


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _message(feature: str, absent: list[Requirement], extra: str | None) -> str:
    extras = extra or ",".join(dict.fromkeys(need.extra for need in absent))
    verb = "is" if len(absent) == 1 else "are"
    packages = _names([need.package for need in absent])
    return f"{feature} needs {packages}, which {verb} not installed: pip install 'hotloop[{extras}]'"


def missing_message(feature: str, *needs: Requirement, extra: str | None = None) -> str | None:
    """What :func:`require` would raise for ``feature``, or ``None`` when every package in ``needs`` is installed.

    Args:
        feature: What needs the packages, as the message's subject (``"hotloop bench's charts"``).
        *needs: The packages it needs.
        extra: The one extra that installs all of them; by default the extras of the missing ones.

    Returns:
        The message, or ``None``.
    """
    absent = missing(*needs)
    return _message(feature, absent, extra) if absent else None


def require(feature: str, *needs: Requirement, extra: str | None = None) -> None:
    """Raises unless every package in ``needs`` is installed; call it before ``feature`` starts any work.

    Args:
        feature: What needs the packages, as the message's subject.
        *needs: The packages it needs.
        extra: The one extra that installs all of them; by default the extras of the missing ones.

    Raises:
        ModuleNotFoundError: Some are missing; the message names each missing package and the extra to install,
            ``name`` is the first missing module.

    Examples:
        >>> require("this example", Requirement("sys", "python", "none"))  # installed: returns None
    """
    absent = missing(*needs)
    if absent:
        raise ModuleNotFoundError(_message(feature, absent, extra), name=absent[0].module)
