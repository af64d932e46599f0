"""Every ```python block of README.md and docs/*.md runs, standalone, so that the documentation cannot rot.

Each block runs in its own Python process, in a temporary working directory, on the CPU (``CUDA_VISIBLE_DEVICES=""``),
with a timeout; the test id is ``FILE:LINE`` of the block's opening fence. Blocks in other languages (```bash,
```text …) are not run. A block that needs an optional dependency says so in a comment line of its own,

    # requires: monai, dali

and is skipped, with the reason, where one is missing. ``cuda`` is never available here: such blocks always skip.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
_DOCS = [_ROOT / "README.md", *sorted((_ROOT / "docs").glob("*.md"))]
_TIMEOUT_S = 180  # generous: the 2-core test machine is shared; a block itself should take a few seconds
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_REQUIRES = re.compile(r"^\s*#\s*requires:\s*(?P<names>.+?)\s*$", re.MULTILINE)
_PYTHON = {"python", "py", "python3"}
# Extras and the module that proves each is installed; any other name is taken as a module name.
_MODULES = {"dali": "nvidia.dali", "monai": "monai", "triton": "triton", "sklearn": "sklearn", "bench": "matplotlib"}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown text.

    Args:
        text: Markdown.

    Returns:
        ``(line, code)`` pairs: the 1-based line of the opening fence and the block's code, dedented by the fence's
        indentation.
    """
    blocks: list[tuple[int, str]] = []
    opening: re.Match[str] | None = None
    start, body = 0, []
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if opening is None:
            if match:
                opening, start, body = match, number, []
            continue
        closes = match and match["fence"][0] == opening["fence"][0] and len(match["fence"]) >= len(opening["fence"])
        if closes and not match["info"]:  # type: ignore[index]
            if opening["info"].lower() in _PYTHON:
                blocks.append((start, "\n".join(body) + "\n"))
            opening = None
        else:
            body.append(line[len(opening["indent"]) :] if line.startswith(opening["indent"]) else line)
    return blocks


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def missing_requirement(code: str) -> str | None:
    """Why a block cannot run here (its ``# requires:`` names something missing), or ``None``.

    Args:
        code: The block.

    Returns:
        A skip reason, or ``None`` when every requirement is met.
    """
    for match in _REQUIRES.finditer(code):
        for name in (part.strip() for part in match["names"].split(",")):
            if name == "cuda":
                return "needs a CUDA device; the docs are tested on the CPU"
            if not _installed(_MODULES.get(name, name)):
                return f"needs {name!r}, not installed (pip install 'hotloop[{name}]')"
    return None


def _collect() -> list[pytest.param]:
    params = []
    for path in _DOCS:
        for line, code in python_blocks(path.read_text(encoding="utf-8")):
            name = f"{path.relative_to(_ROOT).as_posix()}:{line}"
            params.append(pytest.param(name, code, id=name))
    return params


@pytest.mark.parametrize(("where", "code"), _collect())
def test_docs_python_block_runs(where, code, tmp_path):
    reason = missing_requirement(code)
    if reason is not None:
        pytest.skip(f"{where}: {reason}")
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{where}: the block ran longer than {_TIMEOUT_S} s")
    if done.returncode != 0:
        pytest.fail(f"{where}: the block failed (exit code {done.returncode}):\n{done.stderr[-3000:]}", pytrace=False)


def test_readme_and_every_guide_are_collected():
    names = {path.name for path in _DOCS}
    assert "README.md" in names and "migration-ignite.md" in names and "index.md" in names
    assert len(python_blocks((_ROOT / "README.md").read_text(encoding="utf-8"))) >= 3


def test_only_python_blocks_are_extracted_with_their_lines():
    text = "\n".join(
        [
            "# Title",  # 1
            "```python",  # 2
            "x = 1",  # 3
            "```",  # 4
            "```bash",  # 5
            "echo not python",  # 6
            "```",  # 7
            "- item",  # 8
            "   ```py",  # 9: indented fence, dedented body
            "   y = [",  # 10
            "   ```text",  # 11: a fence with an info string does not close
            "   ]",  # 12
            "   ```",  # 13
            "````python",  # 14: a longer fence holds a shorter one
            "s = '''",  # 15
            "```",  # 16
            "'''",  # 17
            "````",  # 18
        ]
    )
    assert python_blocks(text) == [(2, "x = 1\n"), (9, "y = [\n```text\n]\n"), (14, "s = '''\n```\n'''\n")]


@pytest.mark.parametrize(
    ("code", "skipped"),
    [
        ("import torch\n", False),
        ("# requires: cuda\nimport torch\n", True),
        ("# requires: a_module_that_is_not_there\n", True),
        ("# requires: torch, sys\n", False),
        ("x = 1  # requires: cuda is only a marker on a line of its own\n", False),
    ],
)
def test_requires_marker(code, skipped):
    assert (missing_requirement(code) is not None) == skipped
