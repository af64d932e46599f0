#!/usr/bin/env python3
"""``./dev gpu`` and ``./dev gpu-wheels``: hotloop's GPU check in one command (docs/gpu.md).

``gpu-wheels`` (here, with network): downloads the wheels of the packages a GPU machine without network lacks
(Ignite, MONAI) for Python 3.12 on x86_64 Linux into ``.whl/`` (git-ignored) and checks that everything they require
is on that machine.

``gpu [--out DIR]`` (on a machine with CUDA): installs those wheels into a private folder, builds hotloop with its
native module, runs every test marked ``gpu``, then the GPU benchmark (:mod:`hotloop.bench.gpu`), and writes
``DIR/gpu-report.md`` (tables a person reads), ``DIR/gpu-results.json`` and ``DIR/gpu-log.txt`` (every stage's
output). Every stage is a child process with a time limit taken from one budget, so that one hang costs its own slot
and not the whole run. Exit code: 0 when every stage, test and check passed; 1 otherwise; 2 without CUDA.

``gpu --dry-run`` runs the same stages on the CPU: tiny sizes, the fake CUDA-graph backend, Triton's interpreter.

This file is a script run by the machine's own Python: it uses the standard library only and never imports hotloop
(which needs the wheels it installs).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIR = ROOT / ".whl"
BUILD_DIR = "build/gpu/{wheel_tag}"  # scikit-build-core's build folder, kept between runs: rebuilds are incremental
DEFAULT_OUT = ROOT / "results" / "gpu"
REPORT, RESULTS, LOG = "gpu-report.md", "gpu-results.json", "gpu-log.txt"

#: What ``gpu-wheels`` downloads: the packages the lent GPU machine lacks (it has torch, triton, lightning, pytest...).
WHEELS = ("pytorch-ignite==0.5.5", "monai==1.6.1")
#: The target of those wheels: the lent machine's Python and platform.
WHEEL_TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"] + [
    arg for tag in ("manylinux_2_28_x86_64", "manylinux2014_x86_64") for arg in ("--platform", tag)
]
#: Distributions on the lent machine's image (its package list as read on 2026-11-17) that the wheels may require.
MACHINE_HAS = frozenset(
    "torch numpy packaging triton lightning pytorch-lightning pytest pytest-timeout pytest-xdist hypothesis tqdm "
    "scikit-learn matplotlib pyyaml typing-extensions filelock fsspec jinja2 sympy networkx pillow scipy".split()
)
#: The ceiling of what travels to the device machine with the working tree (64 MiB in all): the wheels' share.
WHEEL_BUDGET_BYTES = 40 * 2**20
#: How much of each stage's output (its tail) gpu-log.txt keeps.
LOG_TAIL_BYTES = 200_000

_CHECK_TORCH = (
    "import json, torch\n"
    "ok = torch.cuda.is_available()\n"
    "print(json.dumps({'torch': torch.__version__, 'cuda_runtime': torch.version.cuda, 'cuda': ok,\n"
    "    'device': torch.cuda.get_device_name(0) if ok else None}))\n"
)


@dataclass(frozen=True)
class Stage:
    """One child process of the run.

    Args:
        name: Its name in the report (a part of :mod:`hotloop.bench.gpu` is run by its name).
        cap: The most seconds it may take.
        floor: Seconds kept free for it while the stages before it run.
        dry_cap: ``cap`` in a dry run.
    """

    name: str
    cap: float
    floor: float
    dry_cap: float


# In run order. Caps add up to more than the budget: the budget, shared out by Budget, bounds the whole run, and each
# stage's floor is kept free for it. Expected on one H200 with 16 cores (docs/gpu.md has the reasoning): check 5 s,
# install 5 s, build 20 s, env 10 s, tests 60-120 s, trainer parts 40-90 s each (inductor's compile), others 15-30 s.
STAGES = (
    Stage("check", cap=60, floor=10, dry_cap=60),
    Stage("install", cap=60, floor=10, dry_cap=60),
    Stage("build", cap=150, floor=30, dry_cap=150),
    Stage("env", cap=60, floor=15, dry_cap=60),
    Stage("tests", cap=180, floor=40, dry_cap=120),
    Stage("kernels", cap=90, floor=20, dry_cap=90),
    Stage("evaluator", cap=90, floor=20, dry_cap=90),
    Stage("prefetch", cap=60, floor=15, dry_cap=60),
    Stage("trainer_cnn", cap=150, floor=30, dry_cap=90),
    Stage("trainer_transformer", cap=150, floor=30, dry_cap=90),
)
PARTS = ("env", "kernels", "evaluator", "prefetch", "trainer_cnn", "trainer_transformer")
DEFAULT_BUDGET = 450.0  # seconds: the "well inside 8 minutes", with the device call's own start on top


class Budget:
    """Shares a total time out among the stages: each gets at most its cap and leaves the later stages' floors."""

    def __init__(self, total: float, stages: Sequence[Stage], dry_run: bool) -> None:
        self.deadline = time.monotonic() + total
        self._stages = list(stages)
        self._dry_run = dry_run

    def timeout(self, name: str) -> float:
        """Seconds ``name`` may run now; 0 when no time is left for it."""
        index = [stage.name for stage in self._stages].index(name)
        stage = self._stages[index]
        left = self.deadline - time.monotonic()
        reserved = sum(later.floor for later in self._stages[index + 1 :])
        cap = stage.dry_cap if self._dry_run else stage.cap
        floor = min(stage.floor, cap)
        timeout = min(cap, left - reserved)
        if timeout < floor:  # the earlier stages ran long: take the floor from what is left
            timeout = min(floor, left)
        return max(timeout, 0.0)


@dataclass
class Outcome:
    """What one child process did."""

    status: str  # "ok", "failed", "timeout", "skipped"
    seconds: float
    timeout: float
    returncode: int | None
    log: Path | None
    note: str = ""

    def as_dict(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "status": self.status,
            "seconds": round(self.seconds, 1),
            "timeout_s": round(self.timeout, 1),
            "returncode": self.returncode,
            "note": self.note,
        }


def run_child(argv: Sequence[str], env: dict[str, str], timeout: float, log: Path) -> Outcome:
    """Runs ``argv`` with its output in ``log``; kills its whole process group when it outlives ``timeout``.

    A new session makes the child the leader of a process group that holds everything it starts (pytest-xdist
    workers, inductor's compile workers), so that a timeout ends all of it and nothing else.
    """
    start = time.monotonic()
    if timeout <= 0:
        return Outcome("skipped", 0.0, 0.0, None, None, "no time left in the budget")
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        child = subprocess.Popen(
            list(argv), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended just now, with everything it started
                pass
            child.wait()
            seconds = time.monotonic() - start
            return Outcome("timeout", seconds, timeout, None, log, f"killed after {seconds:.0f} s (its limit)")
    status = "ok" if code == 0 else "failed"
    return Outcome(status, time.monotonic() - start, timeout, code, log, "" if code == 0 else f"exit code {code}")


def _tail(path: Path | None, size: int = LOG_TAIL_BYTES) -> str:
    if path is None or not path.exists():
        return ""
    data = path.read_bytes()
    text = data[-size:].decode("utf-8", errors="replace")
    return text if len(data) <= size else f"[... {len(data) - size} bytes left out ...]\n{text}"


def _last_lines(path: Path | None, count: int = 3) -> str:
    lines = [line for line in _tail(path, 20_000).splitlines() if line.strip()]
    return " | ".join(line.strip()[:200] for line in lines[-count:])


# ---------------------------------------------------------------------------------------------------------------------
# wheels
# ---------------------------------------------------------------------------------------------------------------------


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(wheel: Path) -> list[str]:
    """The distributions a wheel requires, extras and environment-excluded ones left out."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode("utf-8").splitlines()
    names = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        requirement, _, marker = line[len("Requires-Dist:") :].partition(";")
        if "extra" in marker:
            continue
        names.append(_normalize(re.split(r"[\s<>=!~\[(]", requirement.strip(), maxsplit=1)[0]))
    return names


def wheel_name(wheel: Path) -> str:
    return _normalize(wheel.name.split("-")[0])


def check_wheels(folder: Path) -> list[str]:
    """Problems with the wheels in ``folder``: two versions of one package, a requirement the machine lacks."""
    wheels = sorted(folder.glob("*.whl"))
    names = [wheel_name(wheel) for wheel in wheels]
    problems = [f"two wheels of {name} in {folder}: keep one" for name in sorted(set(names)) if names.count(name) > 1]
    known = MACHINE_HAS | set(names)
    for wheel in wheels:
        missing = sorted(set(wheel_requirements(wheel)) - known)
        if missing:
            problems.append(
                f"{wheel.name} requires {', '.join(missing)}: add a wheel of it to WHEELS in scripts/gpu.py"
            )
    size = sum(wheel.stat().st_size for wheel in wheels)
    if size > WHEEL_BUDGET_BYTES:
        problems.append(
            f"the wheels take {size / 2**20:.1f} MiB, more than the {WHEEL_BUDGET_BYTES / 2**20:.0f} MiB allowed"
        )
    return problems


def fetch_wheels(dest: Path) -> int:
    """``./dev gpu-wheels``: downloads :data:`WHEELS` for the GPU machine into ``dest`` and checks them."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
    command += WHEEL_TARGET + ["-d", str(dest), *WHEELS]
    print(f"[gpu-wheels] downloading {', '.join(WHEELS)} for Python 3.12 / manylinux x86_64 into {dest}")
    if subprocess.run(command).returncode:
        print("[gpu-wheels] pip download failed (it needs network access to PyPI)", file=sys.stderr)
        return 1
    problems = check_wheels(dest)
    for wheel in sorted(dest.glob("*.whl")):
        print(
            f"  {wheel.name}  {wheel.stat().st_size / 2**20:.1f} MiB  requires: {', '.join(wheel_requirements(wheel))}"
        )
    for problem in problems:
        print(f"[gpu-wheels] error: {problem}", file=sys.stderr)
    if not problems:
        where = dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest
        print(f"[gpu-wheels] ready: carry {where} to the GPU machine (docs/gpu.md)")
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------------


class Run:
    """The state of one ``./dev gpu`` run: its folders, environment, budget and what each stage did."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dry_run: bool = args.dry_run
        self.work = Path(tempfile.mkdtemp(prefix="hotloop-gpu-"))
        self.site = self.work / "site"
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.budget = Budget(args.budget, STAGES, self.dry_run)
        self.stages: dict[str, Outcome] = {}
        self.results: dict[str, Any] = {}
        self.started = time.monotonic()
        self.env = self._environment()

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        # The installed wheels first; the source tree last, for when the build fails (pure-Python decollation).
        paths = [str(self.site), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep)), str(ROOT / "src")]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.pop("TRITON_INTERPRET", None)
        return env

    def stage(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None, quiet: bool = False) -> Outcome:
        """Runs one stage's child process in its share of the budget; prints a line on how it went."""
        log = self.logs / f"{name}.log"
        outcome = run_child(argv, env or self.env, self.budget.timeout(name), log)
        if outcome.status == "failed":
            outcome.note = f"{outcome.note}: {_last_lines(log)}"
        self.stages[name] = outcome
        if not quiet:
            self.report(name)
        return outcome

    def report(self, name: str) -> None:
        outcome = self.stages[name]
        line = f"[gpu] {name:<20} {outcome.status:<8} {outcome.seconds:6.1f} s (limit {outcome.timeout:.0f} s)"
        print(f"{line} {outcome.note}"[:400], flush=True)

    def skip(self, name: str, note: str) -> None:
        self.stages[name] = Outcome("skipped", 0.0, 0.0, None, None, note)
        print(f"[gpu] {name:<20} skipped  {note}", flush=True)


def check_cuda(run: Run) -> int | None:
    """The quick check: on a machine without CUDA, one line and exit code 2. Returns None to go on."""
    if not run.dry_run and not _nvidia_smi_finds_a_gpu():
        print("./dev gpu: no CUDA GPU on this machine (nvidia-smi finds none); ./dev gpu --dry-run runs it on the CPU")
        return 2
    outcome = run.stage("check", [sys.executable, "-c", _CHECK_TORCH], quiet=True)  # one line if it stops here
    found = _last_json(outcome.log) if outcome.status == "ok" else None
    run.results["check"] = found
    if found is None:
        print(f"./dev gpu: {sys.executable} cannot import torch ({outcome.note}); see docs/gpu.md", file=sys.stderr)
        return 2 if not run.dry_run else 1
    if not run.dry_run and not found["cuda"]:
        print(f"./dev gpu: torch {found['torch']} sees no CUDA device here; ./dev gpu --dry-run runs it on the CPU")
        return 2
    run.report("check")
    return None


def _nvidia_smi_finds_a_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def _last_json(log: Path | None) -> Any:
    for line in reversed(_tail(log, 20_000).splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def install_wheels(run: Run) -> None:
    wheels = sorted(run.args.wheels.glob("*.whl")) if run.args.wheels.is_dir() else []
    if not wheels:
        run.skip("install", f"no wheels in {run.args.wheels} (./dev gpu-wheels prepares them)")
        return
    problems = check_wheels(run.args.wheels)
    if problems:
        run.stages["install"] = Outcome("failed", 0.0, 0.0, None, None, "; ".join(problems))
        print(f"[gpu] install              failed   {'; '.join(problems)}", flush=True)
        return
    run.stage("install", [*_PIP_INSTALL, "--target", str(run.site), *map(str, wheels)])


_PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
_PIP_INSTALL = [*_PIP, "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade"]


def build(run: Run) -> None:
    """hotloop's wheel, native module included, built by the machine's scikit-build-core, installed next to the wheels.

    ``--no-build-isolation``: the machine has the build requirements and no network to fetch them into an isolated
    environment. Should the build fail, hotloop is imported from ``src/`` (decollation then runs its pure-Python
    reference) and the stage is reported as failed.
    """
    dist = run.work / "dist"
    argv = [*_PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist)]
    argv += [f"--config-settings=build-dir={BUILD_DIR}", str(ROOT)]
    outcome = run.stage("build", argv)
    if outcome.status != "ok":
        return
    built = sorted(dist.glob("hotloop-*.whl"))
    install = [*_PIP_INSTALL, "--target", str(run.site), *map(str, built)]
    again = run_child(
        install,
        run.env,
        max(run.budget.timeout("build") - outcome.seconds, 10.0),
        outcome.log or run.logs / "build.log",
    )
    if again.status != "ok":
        outcome.status, outcome.note = again.status, f"installing the built wheel: {_last_lines(again.log)}"
    outcome.seconds += again.seconds


def _test_files() -> list[str]:
    """The test files that hold a test marked ``gpu`` (pytest selects the marked tests in them with ``-m gpu``)."""
    files = sorted(path for path in (ROOT / "tests").rglob("test_*.py") if "pytest.mark.gpu" in path.read_text("utf-8"))
    return [str(path.relative_to(ROOT)) for path in files]


def run_tests(run: Run) -> None:
    """``pytest -m gpu`` over the files holding such tests; verbose, so that a run stopped at its limit still shows
    which tests passed and failed before it (``parse_verbose_log``); JUnit XML for the rest."""
    xml = run.work / "tests.xml"
    argv = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-rfEs", "-p", "no:cacheprovider"]
    argv += ["-o", "timeout=120", "-o", "console_output_style=classic", f"--junitxml={xml}"]
    workers = run.args.test_workers or _test_workers()
    if workers > 1:
        argv += ["-n", str(workers)]
    argv += run.args.test_files or _test_files()
    outcome = run.stage("tests", argv)
    summary = parse_junit(xml) if xml.exists() else parse_verbose_log(outcome.log)
    run.results["tests"] = summary
    if summary is not None and outcome.status == "failed" and outcome.returncode == 1:
        outcome.note = f"{summary['failed'] + summary['errors']} of {summary['total']} failed"
    if summary is not None and summary["total"] == 0:
        outcome.status, outcome.note = "failed", "no test marked gpu was collected"


def _test_workers() -> int:
    """pytest-xdist workers where it is installed (the GPU machine has it): Triton's compiles spread over cores."""
    if importlib.util.find_spec("xdist") is None:
        return 1
    return max(1, min(8, (os.cpu_count() or 1) // 2))


def parse_junit(path: Path) -> dict[str, Any]:
    """Counts and failures from pytest's JUnit XML."""
    root = ElementTree.parse(path).getroot()
    cases = list(root.iter("testcase"))
    failed, errors, skipped = [], [], {}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for kind, bucket in (("failure", failed), ("error", errors)):
            found = case.find(kind)
            if found is not None:
                bucket.append({"test": name, "message": (found.get("message") or "").strip()[:500]})
        skip = case.find("skipped")
        if skip is not None:
            reason = (skip.get("message") or "").strip()[:200]
            skipped[reason] = skipped.get(reason, 0) + 1
    passed = len(cases) - len(failed) - len(errors) - sum(skipped.values())
    return {
        "total": len(cases),
        "passed": passed,
        "failed": len(failed),
        "errors": len(errors),
        "skipped": sum(skipped.values()),
        "failures": failed + errors,
        "skip_reasons": skipped,
        "passed_tests": [f"{c.get('classname', '')}::{c.get('name', '')}" for c in cases if len(c) == 0],
    }


_VERBOSE_RESULT = re.compile(r"^(?:\[gw\d+\] (?:\[ *\d+%\] )?)?(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+::\S+)")
_VERBOSE_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)")


def parse_verbose_log(log: Path | None) -> dict[str, Any] | None:
    """What a verbose pytest log says about the tests that finished: for a run stopped before its JUnit XML."""
    outcomes: dict[str, str] = {}
    for line in _tail(log, 10**7).splitlines():
        found = _VERBOSE_RESULT.match(line)
        if found:
            outcomes[found.group(2)] = found.group(1)
            continue
        found = _VERBOSE_LINE.match(line)
        if found:
            outcomes[found.group(1)] = found.group(2)
    if not outcomes:
        return None
    count = {kind: sum(1 for o in outcomes.values() if o == kind) for kind in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    failed = [
        {"test": name, "message": "(the run was stopped: see gpu-log.txt)"}
        for name, o in outcomes.items()
        if o in ("FAILED", "ERROR")
    ]
    return {
        "total": len(outcomes),
        "passed": count["PASSED"],
        "failed": count["FAILED"],
        "errors": count["ERROR"],
        "skipped": count["SKIPPED"],
        "failures": failed,
        "skip_reasons": {},
        "passed_tests": [name for name, o in outcomes.items() if o == "PASSED"],
        "partial": True,
    }


def run_parts(run: Run, parts: Sequence[str]) -> None:
    env = dict(run.env)
    if run.dry_run and importlib.util.find_spec("triton") is not None:
        env["TRITON_INTERPRET"] = "1"  # the kernels run in Triton's interpreter on the host
    for part in parts:
        out = run.work / f"{part}.json"
        argv = [sys.executable, "-m", "hotloop.bench.gpu", part, "--json", str(out)]
        run.stage(part, argv + (["--dry-run"] if run.dry_run else []), env)
        if out.exists():
            run.results.setdefault("parts", {})[part] = json.loads(out.read_text("utf-8"))


# ---------------------------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------------------------


def checks(run: Run) -> list[dict[str, Any]]:
    """Every check of every part, with the part's name."""
    found = []
    for part, result in run.results.get("parts", {}).items():
        for check in result.get("checks", []):
            found.append({"part": part, **check})
    return found


def failures(run: Run) -> list[str]:
    """What makes the run fail: a stage that did not succeed, a failed test, a failed check."""
    tests = run.results.get("tests") or {}
    listed = "tests" if tests.get("failures") and not tests.get("partial") else None  # each failed test is listed
    found = [
        f"stage {name}: {o.status} {o.note}".strip()
        for name, o in run.stages.items()
        if o.status in ("failed", "timeout") and name != listed
    ]
    if not run.dry_run:
        found += [
            f"stage {name}: skipped ({o.note})"
            for name, o in run.stages.items()
            if o.status == "skipped" and name != "install"
        ]
    found += [f"test {failure['test']}: {failure['message'][:200]}" for failure in tests.get("failures", [])]
    found += [f"check {c['part']}/{c['name']}: {c.get('detail', '')}" for c in checks(run) if not c["ok"]]
    return found


def _stage_table(run: Run) -> list[str]:
    lines = ["| stage | status | seconds | limit (s) | note |", "|---|---|---|---|---|"]
    for name, outcome in run.stages.items():
        note = outcome.note.replace("|", "\\|")[:300]
        lines.append(f"| {name} | {outcome.status} | {outcome.seconds:.1f} | {outcome.timeout:.0f} | {note} |")
    return lines


def _tests_section(run: Run) -> list[str]:
    tests = run.results.get("tests")
    lines = ["## Tests marked `gpu` (`pytest -m gpu`)", ""]
    if tests is None:
        return lines + ["No result: the stage did not finish (see the stages above and gpu-log.txt).", ""]
    lines.append(
        f"{tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, {tests['skipped']} skipped "
        f"(of {tests['total']})."
        + (
            " Partial: the run was stopped at its limit; these are the tests that finished."
            if tests.get("partial")
            else ""
        )
    )
    lines += [f"- FAILED `{f['test']}`: {f['message'][:300]}" for f in tests["failures"]]
    lines += [f"- skipped ×{count}: {reason}" for reason, count in tests["skip_reasons"].items()]
    syncs = [name for name in tests["passed_tests"] if "host_syncs" in name]
    if syncs:
        names = ", ".join(name.split("::")[-1] for name in syncs)
        lines.append(f"- host syncs per iteration: 0 on every path checked ({len(syncs)} tests passed: {names})")
    return lines + [""]


def _environment_line(run: Run) -> str:
    env = (run.results.get("parts", {}).get("env") or {}).get("summary")
    if env:
        return env
    check = run.results.get("check") or {}
    found = f"torch {check.get('torch')}, CUDA {check.get('cuda_runtime')}, device {check.get('device')}"
    return f"{found} (the env part gave nothing more)"


def render(run: Run, exit_code: int) -> str:
    """gpu-report.md: the verdict, the stages, the tests, then each part's own section."""
    kind = (
        "dry run on the CPU (tiny sizes, fake CUDA graphs, Triton's interpreter): the numbers mean nothing"
        if run.dry_run
        else "on the GPU"
    )
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    failed = failures(run)
    lines = [
        f"# hotloop GPU check ({'./dev gpu --dry-run' if run.dry_run else './dev gpu'}), {date}",
        "",
        f"{kind}. {_environment_line(run)}.",
        "",
        f"**Result: {'PASS' if exit_code == 0 else 'FAIL'}** (exit code {exit_code}) in "
        f"{time.monotonic() - run.started:.0f} s.",
    ]
    lines += [f"- {item}" for item in failed[:30]]
    lines += ["", "## Stages", "", *_stage_table(run), "", *_tests_section(run)]
    for part, result in run.results.get("parts", {}).items():
        if part != "env" and result.get("markdown"):
            lines += [result["markdown"].rstrip(), ""]
    lines.append("gpu-results.json holds every number (samples of every round); gpu-log.txt the output of every stage.")
    return "\n".join(lines) + "\n"


def write_outputs(run: Run, out: Path, exit_code: int) -> str:
    out.mkdir(parents=True, exist_ok=True)
    report = render(run, exit_code)
    results = {
        "schema_version": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": run.dry_run,
        "exit_code": exit_code,
        "seconds": round(time.monotonic() - run.started, 1),
        "budget_s": run.args.budget,
        "python": sys.executable,
        "work": str(run.work) if run.args.keep else None,
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "stages": [outcome.as_dict(name) for name, outcome in run.stages.items()],
        "failures": failures(run),
        "checks": checks(run),
        **run.results,
    }
    (out / REPORT).write_text(report, encoding="utf-8")
    (out / RESULTS).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    with open(out / LOG, "w", encoding="utf-8") as log:
        for name, outcome in run.stages.items():
            log.write(f"===== {name}: {outcome.status} in {outcome.seconds:.1f} s =====\n{_tail(outcome.log)}\n")
    return report


def execute(args: argparse.Namespace) -> int:
    run = Run(args)
    try:
        code = check_cuda(run)
        if code is not None:
            return code
        install_wheels(run)
        build(run)
        run_parts(run, [part for part in args.parts if part == "env"])  # first: what the machine has, in seconds
        if "tests" not in args.skip:
            run_tests(run)
        run_parts(run, [part for part in args.parts if part != "env"])
        code = 1 if failures(run) else 0
        report = write_outputs(run, args.out, code)
        print(report)
        for failure in failures(run)[:20]:  # again at the end: the tail of the output is what a device call returns
            print(f"[gpu] failed: {failure[:300]}")
        verdict = "PASS" if code == 0 else "FAIL"
        print(f"[gpu] {verdict} in {time.monotonic() - run.started:.0f} s; wrote {args.out / REPORT}, {RESULTS}, {LOG}")
        return code
    finally:
        if not args.keep:
            shutil.rmtree(run.work, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./dev gpu", description="hotloop's GPU check: tests and benchmark (docs/gpu.md)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gpu = sub.add_parser("gpu", help="run the check (on a machine with CUDA, or --dry-run)")
    gpu.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for the report (default: {DEFAULT_OUT.relative_to(ROOT)})",
    )
    gpu.add_argument(
        "--dry-run", action="store_true", help="on the CPU: tiny sizes, fake CUDA graphs, Triton's interpreter"
    )
    gpu.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET, help=f"seconds for the whole run (default {DEFAULT_BUDGET:.0f})"
    )
    gpu.add_argument("--wheels", type=Path, default=WHEEL_DIR, help="folder of wheels to install (default: .whl)")
    gpu.add_argument(
        "--parts", nargs="*", choices=PARTS, default=list(PARTS), help="benchmark parts to run (default: all)"
    )
    gpu.add_argument("--skip", nargs="*", choices=["tests"], default=[], help="stages to leave out")
    gpu.add_argument("--test-workers", type=int, help="pytest-xdist workers for the tests (default: half the cores)")
    gpu.add_argument("--test-files", nargs="*", help=argparse.SUPPRESS)  # the tests of this script point it elsewhere
    gpu.add_argument("--keep", action="store_true", help="keep the work folder (logs, installed wheels)")
    wheels = sub.add_parser("gpu-wheels", help="download the wheels the GPU machine lacks into .whl/")
    wheels.add_argument("--dest", type=Path, default=WHEEL_DIR, help="folder for the wheels (default: .whl)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "gpu-wheels":
        return fetch_wheels(args.dest)
    args.out = args.out.resolve()
    args.wheels = args.wheels.resolve()
    return execute(args)


if __name__ == "__main__":
    sys.exit(main())
