"""hotloop as a user gets it: ``pip install hotloop`` from the sdist's wheel into a fresh environment, no extras.

The sdist is built from the checkout and the wheel from the sdist (``python -m build``: what a package index
serves), then installed into a fresh virtual environment (no system site-packages) that holds only torch and what
hotloop declares. torch is not downloaded or unpacked again (about 900 MB, 30 s here): the environment sees the
running interpreter's torch distribution — its files and those of its own requirements, nothing else — through a
``.pth`` file naming a folder of links to them. pip then treats torch as installed and installs hotloop's declared
dependencies itself.

In that environment every module of the package imports (or, where it needs an extra, fails with a
``ModuleNotFoundError`` naming the extra), ``hotloop --help`` and its subcommands' help work, and the commands and
loaders that need an extra say which before they do any work.

Measured on the 2-core machine: about 50-70 s (building the native module dominates). Marked ``slow``; CI runs it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name != "posix", reason="links torch's files into the fresh environment (POSIX symlinks)"),
]

_ROOT = Path(__file__).resolve().parents[1]
_DECLARED = {"hotloop", "pytorch-ignite", "numpy", "packaging"}  # hotloop, its dependencies and theirs beyond torch
_TIMEOUT_S = 600


def _run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=_TIMEOUT_S, **kwargs)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _closure(name: str) -> list[importlib.metadata.Distribution]:
    """``name``'s installed distribution and those of its requirements, recursively (extras left out)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        key = canonicalize_name(dist.metadata["Name"])
        if key in found:
            continue
        found[key] = dist
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


def _link_distributions(dists: list[importlib.metadata.Distribution], folder: Path) -> set[str]:
    """Links each distribution's top-level files and folders into ``folder``; returns their canonical names."""
    folder.mkdir()
    for dist in dists:
        tops = {file.parts[0] for file in dist.files or [] if file.parts[0] not in ("..", "__pycache__")}
        for top in tops:
            if not top.endswith(".pth") and not (folder / top).exists():
                (folder / top).symlink_to(Path(dist.locate_file(top)).resolve())
    return {canonicalize_name(dist.metadata["Name"]) for dist in dists}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it."""
    pytest.importorskip("build", reason="needs the 'build' package (in hotloop's test extra)")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, _ROOT])
    return out


@pytest.fixture(scope="module")
def fresh_env(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """A new virtual environment with the running torch (linked), then ``pip install <wheel>``: its python and the
    names of the distributions linked into it."""
    root = tmp_path_factory.mktemp("env")
    _run([sys.executable, "-m", "venv", "--without-pip", root / "venv"])
    python = root / "venv" / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    linked = _link_distributions(_closure("torch"), root / "torch-only")
    (site / "_torch_only.pth").write_text(f"{root / 'torch-only'}\n", encoding="utf-8")
    (wheel,) = dist.glob("hotloop-*.whl")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--disable-pip-version-check", wheel])
    return python, linked


def test_sdist_carries_the_kernels_once(dist):
    (sdist,) = dist.glob("hotloop-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert "src/hotloop/kernels/stats.py" in names and "CMakeLists.txt" in names
    assert not [name for name in names if name.startswith("kernels/") or name == "kernels"]


def test_only_torch_and_the_declared_dependencies_are_installed(fresh_env):
    python, linked = fresh_env
    listing = "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"
    installed = {canonicalize_name(name) for name in _run([python, "-c", listing]).stdout.split()}
    assert installed - linked == _DECLARED
    assert "torch" in installed and not {"scikit-learn", "pillow", "matplotlib", "monai", "tqdm"} & installed


_CHECKS = textwrap.dedent(
    """
    import contextlib, io, json, pkgutil, sys, tempfile
    from pathlib import Path

    import hotloop

    report = {"modules": {}}
    for info in pkgutil.walk_packages(hotloop.__path__, "hotloop."):
        try:
            __import__(info.name)
            report["modules"][info.name] = None
        except ModuleNotFoundError as error:
            report["modules"][info.name] = [str(error), error.name]

    from hotloop import cli
    from hotloop.collate import HAS_NATIVE

    report["native"] = HAS_NATIVE
    for command in (["demo", "--help"], ["bench", "--help"]):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                cli.main(command)
            except SystemExit as done:
                report[" ".join(command)] = [done.code, out.getvalue()[:60]]
    work = Path(tempfile.mkdtemp())
    for command in (["demo", "--epochs", "1"], ["bench", "--quick"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
            code = cli.main([*command, "--output", str(work / command[0])])
        report[command[0]] = [code, err.getvalue(), out.getvalue(), (work / command[0]).exists()]
    from hotloop.data import image_folder_loader

    try:
        image_folder_loader(work / "no-images", batch_size=4, image_size=8, backend="torch")
    except ModuleNotFoundError as error:
        report["loader"] = str(error)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def checks(fresh_env) -> dict:
    python, _ = fresh_env
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return json.loads(_run([python, "-c", _CHECKS], env=env, cwd=python.parents[2]).stdout.splitlines()[-1])


def test_every_module_imports_or_names_its_extra(checks):
    modules = checks["modules"]
    assert {"hotloop.cli", "hotloop.demo", "hotloop.data.factories", "hotloop.bench.compare"} <= set(modules)
    failed = {name: error for name, error in modules.items() if error is not None}
    triton_only = {"hotloop.kernels._common", "hotloop.kernels.postprocess", "hotloop.kernels.stats"}
    assert set(failed) <= triton_only, failed
    for name, (message, missing) in failed.items():
        assert missing == "triton" and message.endswith("pip install 'hotloop[triton]'"), (name, message)
    assert checks["native"], "the wheel should carry the compiled hotloop.collate._decollate"


def test_the_hotloop_command_and_its_help(fresh_env, checks):
    python, _ = fresh_env
    done = _run([python.parent / "hotloop", "--help"])
    assert done.stdout.startswith("usage: hotloop") and "demo" in done.stdout and "bench" in done.stdout
    for command in ("demo --help", "bench --help"):
        code, out = checks[command]
        assert code == 0 and out.startswith(f"usage: hotloop {command.split()[0]}")


def test_commands_and_loaders_name_the_extra_before_any_work(checks):
    code, err, out, created = checks["demo"]
    assert (code, out, created) == (1, "", False)
    assert err == (
        "hotloop demo: error: hotloop demo needs tqdm and scikit-learn, which are not installed: "
        "pip install 'hotloop[bench]'\n"
    )
    code, err, out, created = checks["bench"]
    assert (code, out, created) == (1, "", False)
    assert "needs matplotlib, which is not installed: pip install 'hotloop[bench]'" in err
    assert "needs Pillow, which is not installed: pip install 'hotloop[images]'" in checks["loader"]
