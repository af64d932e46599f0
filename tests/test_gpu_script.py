"""``./dev gpu`` (scripts/gpu.py): its dry run end to end on the CPU, its answer without CUDA, and its plumbing.

The dry run is the whole GPU check with tiny sizes, the fake CUDA-graph backend and Triton's interpreter: install
(a small wheel made here), build, the ``gpu``-marked tests (they skip on the CPU; one extra test file here fails on
purpose, to show that a failing test fails the run), and every benchmark part. It takes about 1.5 minutes on 2 cores.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

_FAILING_TEST = """
import pytest


@pytest.mark.gpu
def test_fails_on_purpose():
    assert 1 + 1 == 3, "planted failure"
"""


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hotloop_gpu_script", ROOT / "scripts" / "gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu = _load_script()


def _wheel(folder: Path, name: str = "hotloop_probe", requires: tuple[str, ...] = ("torch",)) -> Path:
    """A pure-Python wheel of one module ``name`` that defines ``VALUE = 42``."""
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n{}".format(
            name, "".join(f"Requires-Dist: {r}\n" for r in requires)
        ),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict, str]:
    base = tmp_path_factory.mktemp("gpu")
    wheels, out, tests = base / "wheels", base / "out", base / "planted"
    wheels.mkdir()
    tests.mkdir()
    _wheel(wheels)
    (tests / "test_planted_gpu_failure.py").write_text(_FAILING_TEST)
    test_files = gpu._test_files() + [str(tests / "test_planted_gpu_failure.py")]
    command = [sys.executable, str(ROOT / "scripts" / "gpu.py"), "gpu", "--dry-run", "--out", str(out)]
    command += ["--wheels", str(wheels), "--keep", "--test-files", *test_files]
    child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    results = json.loads((out / gpu.RESULTS).read_text(encoding="utf-8"))
    return child.returncode, out, results, child.stdout + child.stderr


def test_dry_run_runs_every_stage(dry_run: tuple[int, Path, dict, str]) -> None:
    _, _, results, output = dry_run
    stages = {stage["name"]: stage for stage in results["stages"]}
    assert list(stages) == [stage.name for stage in gpu.STAGES], output[-3000:]
    assert stages.pop("tests")["status"] == "failed"  # the planted failure
    assert all(stage["status"] == "ok" for stage in stages.values()), stages
    assert results["dry_run"] is True
    site = Path(results["work"]) / "site"
    assert (site / "hotloop_probe" / "__init__.py").read_text() == "VALUE = 42\n"  # the wheel was installed


def test_a_failing_gpu_test_fails_the_run_and_nothing_else_does(dry_run: tuple[int, Path, dict, str]) -> None:
    code, _, results, output = dry_run
    assert code == 1, output[-3000:]
    assert len(results["failures"]) == 1 and "planted failure" in results["failures"][0], results["failures"]
    tests = results["tests"]
    assert tests["failed"] == 1 and tests["passed"] == 0  # on the CPU every real GPU test skips
    assert tests["skipped"] == tests["total"] - 1 >= 20
    assert not any("collect" in reason.lower() and "error" in reason.lower() for reason in tests["skip_reasons"])


def test_dry_run_measures_every_part_and_passes_its_checks(dry_run: tuple[int, Path, dict, str]) -> None:
    _, _, results, _ = dry_run
    parts = results["parts"]
    assert set(parts) == set(gpu.PARTS)
    for name, part in parts.items():
        assert part["dry_run"] is True and part["device"] == "cpu", name
        assert part["checks"] == [] or all(check["ok"] for check in part["checks"]), (name, part["checks"])
        assert name == "env" or part["markdown"].startswith("## "), name
    for workload in ("trainer_cnn", "trainer_transformer"):
        providers = parts[workload]["summary"]["providers"]
        expected = {"raw", "ignite", "hotloop", "hotloop_nosync", "hotloop_auto", "hotloop_graphs", "lightning"}
        assert set(providers) == expected | {"lightning_fit"}, parts[workload]["notes"]
        assert all(p["us_per_iter"]["median"] > 0 for p in providers.values())
    ops = parts["kernels"]["ops"]
    assert len(ops) == 6 and all({"triton", "torch"} <= set(op["us"]) for op in ops)
    assert sum("monai" in op["us"] for op in ops) == 5
    assert parts["kernels"]["copy"]["gb_per_s"] > 0
    assert set(parts["kernels"]["metric"]["providers"]) >= {"monai", "hotloop"}
    assert [r["identical_metric"] for r in parts["evaluator"]["results"].values()] == [True, True]
    assert set(parts["evaluator"]["results"]) == {"Tensor", "MetaTensor"}
    assert set(parts["prefetch"]["summary"]["providers"]) == {"resident", "plain", "prefetch", "prefetch_pinned"}
    assert parts["env"]["native_module"] is True and parts["env"]["versions"]["lightning"]


def test_dry_run_writes_three_files_and_a_readable_report(dry_run: tuple[int, Path, dict, str]) -> None:
    _, out, _, output = dry_run
    assert sorted(path.name for path in out.iterdir()) == sorted([gpu.REPORT, gpu.RESULTS, gpu.LOG])
    report = (out / gpu.REPORT).read_text(encoding="utf-8")
    for title in ("## Stages", "## Tests marked", "## Trainer steps", "## Evaluator", "## Fused ops", "## Prefetch"):
        assert title in report
    assert "**Result: FAIL**" in report and "test_fails_on_purpose" in report
    assert "===== tests: " in (out / gpu.LOG).read_text(encoding="utf-8")
    assert "[gpu] FAIL" in output  # the verdict is the last line, for a reader of the tail


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_without_cuda_dev_gpu_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    child = subprocess.run([str(ROOT / "dev"), "gpu", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    lines = (child.stdout + child.stderr).strip().splitlines()
    assert child.returncode == 2 and len(lines) == 1, lines
    assert "no CUDA" in lines[0] and "--dry-run" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_stage_past_its_limit_is_killed_with_everything_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    outcome = gpu.run_child([sys.executable, "-c", code], dict(os.environ), 3.0, tmp_path / "log")
    assert outcome.status == "timeout" and outcome.returncode is None
    assert time.monotonic() - started < 30
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # killed with its group; reaped by init shortly after
        if not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the grandchild {grandchild} outlived the stage")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


def test_the_budget_keeps_the_later_stages_floors(monkeypatch: pytest.MonkeyPatch) -> None:
    stages = [gpu.Stage("a", cap=100, floor=10, dry_cap=5), gpu.Stage("b", cap=100, floor=20, dry_cap=5)]
    now = [1000.0]
    monkeypatch.setattr(gpu.time, "monotonic", lambda: now[0])
    budget = gpu.Budget(60.0, stages, dry_run=False)
    assert budget.timeout("a") == 40.0  # 60 left, 20 kept for b
    assert gpu.Budget(60.0, stages, dry_run=True).timeout("a") == 5.0  # the dry run's cap
    now[0] += 55.0  # a ran long: b gets what is left, at most its floor
    assert budget.timeout("b") == 5.0
    now[0] += 10.0
    assert budget.timeout("b") == 0.0


def test_check_wheels_names_duplicates_and_missing_requirements(tmp_path: Path) -> None:
    _wheel(tmp_path, "hotloop_probe", requires=("torch", "numpy>=1.24; python_version > '3'", "rich; extra == 'x'"))
    assert gpu.check_wheels(tmp_path) == []
    assert gpu.wheel_requirements(next(tmp_path.glob("*.whl"))) == ["torch", "numpy"]
    _wheel(tmp_path, "other_probe", requires=("not-on-the-machine",))
    (tmp_path / "hotloop_probe-2.0-py3-none-any.whl").write_bytes(
        (tmp_path / "hotloop_probe-1.0-py3-none-any.whl").read_bytes()
    )
    problems = gpu.check_wheels(tmp_path)
    assert any("two wheels of hotloop-probe" in problem for problem in problems), problems
    assert any("requires not-on-the-machine" in problem for problem in problems), problems


def test_a_verbose_log_gives_the_tests_that_finished(tmp_path: Path) -> None:
    log = tmp_path / "tests.log"
    log.write_text(
        "[gw0] [ 10%] PASSED tests/a.py::test_one\n[gw1] FAILED tests/a.py::test_two[cuda]\n"
        "tests/b.py::test_three SKIPPED (needs a GPU)\ntests/b.py::test_four PASSED\n"
    )
    summary = gpu.parse_verbose_log(log)
    assert summary is not None and summary["partial"]
    assert (summary["total"], summary["passed"], summary["failed"], summary["skipped"]) == (4, 2, 1, 1)
    assert summary["failures"][0]["test"] == "tests/a.py::test_two[cuda]"
    assert gpu.parse_verbose_log(tmp_path / "missing.log") is None


def test_every_test_that_needs_cuda_is_marked_gpu() -> None:
    """``./dev gpu`` selects ``-m gpu``: a CUDA-only test without the mark would never run anywhere."""
    unmarked = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if "skipif(not torch.cuda.is_available()" in line:
                block = lines[max(0, index - 3) : index + 3]
                if not any("pytest.mark.gpu" in other for other in block):
                    unmarked.append(f"{path.relative_to(ROOT)}:{index + 1}")
    assert unmarked == []
