#!/usr/bin/env python3
"""Ignite 0.5.5's own engine tests, run with hotloop's classes bound in place of Ignite's (issue 15).

    python scripts/ignite_suite.py            # check: hotloop bound in, compared with stock Ignite's recorded outcomes
    python scripts/ignite_suite.py --record   # record: stock Ignite (no rebinding), rewrites the recorded outcomes
    python scripts/ignite_suite.py --list     # the test files run and left out, and why

Fetches pytorch-ignite 0.5.5's sdist from PyPI (``pip download``; pinned by sha256, cached in ``.cache/``, which git
ignores), extracts its ``tests/`` and runs the files listed in ``SUITE`` with pytest and
``scripts/ignite-suite/ignite_suite_plugin.py``. The check fails (exit code 1) on any test that passes on stock
Ignite (``scripts/ignite-suite/stock-outcomes.json``) and not with hotloop bound in; a test that differs is run once
more in a fresh process first, and only one that differs again counts. Tests listed in
``scripts/ignite-suite/exclusions.json`` (each with its environment reason) are deselected in both modes.

Run it with the Python of hotloop's environment (``.venv/bin/python``): it runs pytest with ``sys.executable``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

IGNITE_VERSION = "0.5.5"
SDIST_SHA256 = "2c14de75c939a3cc06d2e7de00b1e0a261917ef9bd874dac2e69d789dfa9cc64"
SDIST_NAME = f"pytorch_ignite-{IGNITE_VERSION}.tar.gz"

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "scripts" / "ignite-suite"
sys.path.insert(0, str(HERE))
from ignite_suite_plugin import matches  # noqa: E402  (the plugin's folder is not a package)

CACHE = REPO / ".cache" / "ignite-suite"
RECORD = HERE / "stock-outcomes.json"
EXCLUSIONS = HERE / "exclusions.json"

# Outcomes that a test must keep with hotloop bound in when stock Ignite has them.
GOOD = ("passed", "xfailed")

# The test files run, each with why: they drive an Engine (hotloop's, once bound) or a factory.
SUITE = {
    "tests/ignite/engine/test_create_supervised.py": "create_supervised_trainer/evaluator and the supervised steps",
    "tests/ignite/engine/test_custom_events.py": "custom events, filters, register_events",
    "tests/ignite/engine/test_deterministic.py": "DeterministicEngine, ReproducibleBatchSampler, resume",
    "tests/ignite/engine/test_engine.py": "the Engine: run, terminate, interrupt, data, epoch_length",
    "tests/ignite/engine/test_engine_state_dict.py": "state_dict / load_state_dict, resume",
    "tests/ignite/engine/test_event_handlers.py": "add/remove/has_event_handler, handler signatures",
    "tests/ignite/engine/test_memory_leaks.py": "the engine is freed after run (weak references)",
    "tests/ignite/handlers/test_checkpoint.py": "Checkpoint/ModelCheckpoint on running engines, resume",
    "tests/ignite/handlers/test_early_stopping.py": "EarlyStopping terminates a trainer",
    "tests/ignite/handlers/test_ema_handler.py": "EMAHandler on a trainer's events",
    "tests/ignite/handlers/test_lr_finder.py": "FastaiLRFinder re-runs and restores a trainer",
    "tests/ignite/handlers/test_param_scheduler.py": "parameter schedulers fired by an engine",
    "tests/ignite/handlers/test_state_param_scheduler.py": "state parameter schedulers fired by an engine",
    "tests/ignite/handlers/test_stores.py": "EpochOutputStore on an evaluator",
    "tests/ignite/handlers/test_terminate_on_nan.py": "TerminateOnNan on a trainer",
    "tests/ignite/handlers/test_time_limit.py": "TimeLimit terminates a run",
    "tests/ignite/handlers/test_time_profilers.py": "BasicTimeProfiler/HandlersTimeProfiler rewrite _event_handlers",
    "tests/ignite/handlers/test_timing.py": "Timer attached to engine events",
    "tests/ignite/handlers/test_handlers.py": "global_step_from_engine",
    "tests/ignite/handlers/test_base_logger.py": "BaseLogger/BaseHandler attach to engine events",
    "tests/ignite/handlers/test_tqdm_logger.py": "ProgressBar on engine events (tqdm)",
    "tests/ignite/handlers/test_fbresearch_logger.py": "FBResearchLogger on a trainer",
    "tests/ignite/metrics/test_running_average.py": "RunningAverage on iteration/epoch events",
    "tests/ignite/metrics/test_metric.py": "Metric.attach/detach/usage on engines",
    "tests/ignite/metrics/test_metrics_lambda.py": "MetricsLambda attached to engines",
    "tests/ignite/metrics/test_metric_group.py": "MetricGroup on an engine",
    "tests/ignite/metrics/test_epoch_metric.py": "EpochMetric on an engine",
    "tests/ignite/metrics/test_frequency.py": "Frequency on an engine (timers)",
    "tests/ignite/metrics/test_loss.py": "Loss with required output keys on an engine",
    "tests/ignite/metrics/test_accumulation.py": "Average/GeometricAverage/VariableAccumulation on engines",
    "tests/ignite/contrib/engines/test_common.py": "setup_common_training_handlers & co on trainers",
    "tests/ignite/contrib/engines/test_tbptt.py": "create_supervised_tbptt_trainer (an Engine subclass use)",
}

# Metric files whose `test_integration*` tests run a plain Engine with the metric attached: only those tests are run
# (the others check the metric's arithmetic without an engine).
INTEGRATION_ONLY = [
    f"tests/ignite/metrics/{name}.py"
    for name in (
        "clustering/test_calinski_harabasz_score",
        "clustering/test_davies_bouldin_score",
        "clustering/test_silhouette_score",
        "regression/test_canberra_metric",
        "regression/test_fractional_absolute_error",
        "regression/test_fractional_bias",
        "regression/test_geometric_mean_absolute_error",
        "regression/test_geometric_mean_relative_absolute_error",
        "regression/test_kendall_correlation",
        "regression/test_manhattan_distance",
        "regression/test_maximum_absolute_error",
        "regression/test_mean_absolute_relative_error",
        "regression/test_mean_error",
        "regression/test_mean_normalized_bias",
        "regression/test_median_absolute_error",
        "regression/test_median_absolute_percentage_error",
        "regression/test_median_relative_absolute_error",
        "regression/test_pearson_correlation",
        "regression/test_r2_score",
        "regression/test_spearman_correlation",
        "regression/test_wave_hedges_distance",
        "test_average_precision",
        "test_cohen_kappa",
        "test_fbeta",
        "test_matthews_corrcoef",
        "test_precision_recall_curve",
        "test_roc_auc",
        "test_roc_curve",
    )
]

# The other test files of tests/ignite/{engine,handlers,metrics,contrib}, and why they are left out.
LEFT_OUT = {
    "tests/ignite/handlers/test_clearml_logger.py": "logger for an external service (clearml not installed)",
    "tests/ignite/handlers/test_mlflow_logger.py": "logger for an external service (mlflow not installed)",
    "tests/ignite/handlers/test_neptune_logger.py": "logger for an external service (neptune not installed)",
    "tests/ignite/handlers/test_polyaxon_logger.py": "logger for an external service (polyaxon not installed)",
    "tests/ignite/handlers/test_tensorboard_logger.py": "logger for an external service (tensorboard not installed)",
    "tests/ignite/handlers/test_visdom_logger.py": "logger for an external service (visdom not installed)",
    "tests/ignite/handlers/test_wandb_logger.py": "logger for an external service (wandb not installed)",
    "tests/ignite/contrib/handlers/test_logger_utils.py": "logger helpers for external services (mocked clients)",
    "tests/ignite/contrib/handlers/test_warnings_of_deprecation_of_handlers.py": "import warnings, no engine",
    "tests/ignite/contrib/metrics/test_warnings_of_deprecation_of_metrics.py": "import warnings, no engine",
    "tests/ignite/metrics/test_dill.py": "pickling a metric, no engine",
    "tests/ignite/metrics/test_gpu_info.py": "GpuInfo needs a GPU",
    "tests/ignite/metrics/fairness/test_accuracy_difference.py": "imports fairlearn (not installed)",
    "tests/ignite/metrics/fairness/test_demographic_parity.py": "imports fairlearn (not installed)",
    "tests/ignite/metrics/gan/test_fid.py": "imports pytorch_fid (not installed)",
    "tests/ignite/metrics/gan/test_utils.py": "imports torchvision (not installed)",
    "tests/ignite/metrics/nlp/test_bleu.py": "imports nltk (not installed)",
    "tests/ignite/metrics/nlp/test_rouge.py": "imports nltk (not installed)",
    "tests/ignite/metrics/rec_sys/test_ndcg.py": "imports ranx (not installed)",
    "tests/ignite/metrics/test_psnr.py": "imports scikit-image (not installed)",
    "tests/ignite/metrics/test_ssim.py": "imports scikit-image (not installed)",
    "tests/ignite/metrics/vision/test_object_detection_map.py": "imports pycocotools (not installed)",
}
# The remaining metric files check a metric's arithmetic; the tests of theirs that run an Engine are distributed ones
# (deselected: exclusions.json).
LEFT_OUT_METRICS_REASON = "metric arithmetic; its Engine-driving tests are distributed ones"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path) -> Path:
    got = _sha256(path)
    if got != SDIST_SHA256:
        raise SystemExit(
            f"ignite_suite: {path} has sha256 {got}, expected {SDIST_SHA256} (pytorch-ignite {IGNITE_VERSION}'s "
            "sdist on PyPI). Refusing to run its tests; delete the file to download it again."
        )
    return path


def fetch_sdist() -> Path:
    """The pinned sdist, from the cache or downloaded with pip (hash verified either way)."""
    cached = CACHE / SDIST_NAME
    if cached.exists():
        return _verify(cached)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(f"pytorch-ignite=={IGNITE_VERSION} --hash=sha256:{SDIST_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--require-hashes"]
        cmd += ["--disable-pip-version-check", "-q", "-r", str(requirement), "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        downloaded = Path(tmp) / SDIST_NAME
        if result.returncode != 0 or not downloaded.exists():
            raise SystemExit(
                f"ignite_suite: could not download pytorch-ignite {IGNITE_VERSION}'s sdist with pip "
                f"(exit code {result.returncode}):\n{result.stdout}{result.stderr}"
            )
        _verify(downloaded)
        downloaded.replace(cached)
    return cached


def extract_tests(sdist: Path) -> Path:
    """A fresh copy of the sdist's ``tests/`` under the cache; returns the folder that holds ``tests/``."""
    root = CACHE / f"pytorch_ignite-{IGNITE_VERSION}"
    shutil.rmtree(root, ignore_errors=True)
    prefix = f"pytorch_ignite-{IGNITE_VERSION}/tests/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(CACHE, members=members, filter="data")
    # pytest's configuration for this run (Ignite's own is in the sdist's pyproject.toml: markers only).
    (root / "pytest.ini").write_text(
        "[pytest]\n"
        "markers =\n"
        "    distributed: mark a test with distributed option\n"
        "    multinode_distributed: mark a test with multi-node distributed option\n"
        "    tpu: mark a test as requiring XLA\n"
        "timeout = 300\n"
    )
    return root


def selection(root: Path) -> dict[str, str]:
    """Every test file of the folders the suite draws from, with ``run: why`` or ``left out: why``."""
    folders = ["engine", "handlers", "metrics", "contrib"]
    found = {str(p.relative_to(root)) for f in folders for p in (root / "tests" / "ignite" / f).rglob("test_*.py")}
    missing = sorted((set(SUITE) | set(INTEGRATION_ONLY)) - found)
    if missing:
        raise SystemExit(f"ignite_suite: files in SUITE that the sdist does not have: {missing}")
    result = {}
    for path in sorted(found):
        if path in SUITE:
            result[path] = f"run: {SUITE[path]}"
        elif path in INTEGRATION_ONLY:
            result[path] = "run, its test_integration* only: a plain Engine with the metric attached"
        elif path in LEFT_OUT:
            result[path] = f"left out: {LEFT_OUT[path]}"
        elif path.startswith("tests/ignite/metrics/"):
            result[path] = f"left out: {LEFT_OUT_METRICS_REASON}"
        else:
            raise SystemExit(f"ignite_suite: {path} is neither in SUITE nor in LEFT_OUT")
    return result


def run_pytest(root: Path, targets: list[str], bind: bool, out: Path, verbose: bool = False) -> dict:
    """Runs pytest on ``targets`` in ``root``; returns the outcomes, durations and what the plugin reported."""
    config = out.with_suffix(".config.json")
    config.write_text(json.dumps(dict(json.loads(EXCLUSIONS.read_text()), integration_only=INTEGRATION_ONLY)))
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HOTLOOP_IGNITE_SUITE_BIND="1" if bind else "0",
        HOTLOOP_IGNITE_SUITE_OUT=str(out),
        HOTLOOP_IGNITE_SUITE_CONFIG=str(config),
        # Ignite's CPU run (tests/run_cpu_tests.sh) hides GPUs too; the recorded outcomes are a CPU run's.
        CUDA_VISIBLE_DEVICES="",
        PYTHONDONTWRITEBYTECODE="1",
    )
    # Tiny tensors, two pytest processes and DataLoader workers on 2 cores: intra-op threads only add waiting
    # (test_deterministic.py's resume tests: 110-120 s with one thread, 140-190 s with two, on a loaded machine).
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "pytest", "-p", "ignite_suite_plugin", "-p", "no:cacheprovider"]
    cmd += ["-c", str(root / "pytest.ini"), "--rootdir", str(root), "-q", "--no-header", "-rN", *targets]
    # The whole suite's output is long: its summary line is enough; reruns (verbose) show their failures in full.
    result = subprocess.run(cmd, cwd=root, env=env, stdout=None if verbose else subprocess.PIPE, text=True)
    output = (result.stdout or "").strip()
    if output:
        print(f"pytest: {output.splitlines()[-1]}", flush=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    report: dict = {"outcomes": {}, "durations": {}, "bound": {}, "excluded": {}, "collect_errors": {}, "died": ""}
    for line in lines:
        if "test" in line:
            report["outcomes"][line["test"]] = line["outcome"]
            report["durations"][line["test"]] = line["seconds"]
        else:
            report.update(line)
    if not lines or "test" in lines[-1]:  # no session summary: pytest died
        last = lines[-1]["test"] if lines else "before the first test ended"
        report["died"] = f"pytest exited with code {result.returncode} after {last}:\n{output[-4000:]}"
    return report


def counts(outcomes: dict[str, str], excluded: int) -> dict[str, int]:
    tally = Counter(outcomes.values())
    kinds = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "flaky", "missing")
    result = {k: tally.get(k, 0) for k in kinds}
    result["excluded"] = excluded
    return result


def _format_counts(c: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in c.items() if v or k in ("passed", "failed", "skipped", "excluded"))


def _slowest_files(durations: dict[str, float], n: int = 6) -> str:
    return ", ".join(f"{Path(f).name} {s:.0f} s" for f, s in list(_file_seconds(durations).items())[:n])


def _rerun(root: Path, nodeids: list[str], bind: bool) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        return run_pytest(root, nodeids, bind, Path(tmp) / "rerun.jsonl", verbose=True)["outcomes"]


def _shards(jobs: int) -> list[list[str]]:
    """SUITE's files in ``jobs`` groups of about equal recorded run time (longest first, each to the least loaded)."""
    seconds = json.loads(RECORD.read_text()).get("file_seconds", {}) if RECORD.exists() else {}
    shards: list[list[str]] = [[] for _ in range(max(1, jobs))]
    load = [0.0] * len(shards)
    for path in sorted([*SUITE, *INTEGRATION_ONLY], key=lambda f: -seconds.get(f, 1.0)):
        least = load.index(min(load))
        shards[least].append(path)
        load[least] += seconds.get(path, 1.0)
    return [shard for shard in shards if shard]


def _merge(reports: list[dict]) -> dict:
    merged = reports[0]
    for report in reports[1:]:
        for key in ("outcomes", "durations", "bound", "excluded", "collect_errors"):
            merged[key].update(report[key])
        merged["died"] = "\n".join(d for d in (merged["died"], report["died"]) if d)
    return merged


def _full_run(root: Path, bind: bool, jobs: int) -> dict:
    """SUITE in ``jobs`` pytest processes at once (many of its tests sleep or wait for DataLoader workers)."""
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(jobs) as pool:
        shards = _shards(jobs)
        outs = [Path(tmp) / f"outcomes-{i}.jsonl" for i in range(len(shards))]
        report = _merge(list(pool.map(lambda shard, out: run_pytest(root, shard, bind, out), shards, outs)))
    exclusions = json.loads(EXCLUSIONS.read_text())
    for key, reason in exclusions["tests"].items():
        if not reason.strip():
            raise SystemExit(f"ignite_suite: {EXCLUSIONS.name}: {key} has no reason")
        if not any(matches(nodeid, key) for nodeid in report["excluded"]):
            raise SystemExit(f"ignite_suite: {EXCLUSIONS.name}: {key} matches no test; remove it")
    return report


def _file_seconds(durations: dict[str, float]) -> dict[str, float]:
    per_file: Counter = Counter()
    for nodeid, seconds in durations.items():
        per_file[nodeid.split("::")[0]] += seconds
    return {path: round(seconds, 1) for path, seconds in per_file.most_common()}


def _problems(report: dict) -> list[str]:
    lines = [f"COLLECTION ERROR {nodeid}:\n{text}" for nodeid, text in report["collect_errors"].items()]
    return lines + ([report["died"]] if report["died"] else [])


def record(root: Path, jobs: int) -> int:
    started = time.monotonic()
    report = _full_run(root, bind=False, jobs=jobs)
    if _problems(report):
        raise SystemExit("ignite_suite: stock Ignite did not run through:\n" + "\n".join(_problems(report)))
    outcomes = report["outcomes"]
    bad = [k for k, v in outcomes.items() if v not in GOOD and v not in ("skipped", "xpassed")]
    if bad:  # a stock failure is recorded as such only if it fails again; one that then passes is "flaky"
        again = _rerun(root, bad, bind=False)
        outcomes.update({k: "flaky" for k in bad if again.get(k) != outcomes[k]})
    seconds = round(time.monotonic() - started, 1)
    import ignite
    import torch

    data = {
        "ignite": ignite.__version__,
        "sdist_sha256": SDIST_SHA256,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "recorded_with": "python scripts/ignite_suite.py --record "
        "(stock Ignite, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS=1)",
        "seconds": seconds,
        "jobs": jobs,
        "counts": counts(outcomes, len(report["excluded"])),
        "file_seconds": _file_seconds(report["durations"]),
        "outcomes": outcomes,
    }
    RECORD.write_text(json.dumps(data, indent=1) + "\n")
    print(f"ignite_suite: stock Ignite {data['ignite']}: {_format_counts(data['counts'])} in {seconds:.0f} s")
    print(f"ignite_suite: slowest files: {_slowest_files(report['durations'])}")
    print(f"ignite_suite: wrote {RECORD.relative_to(REPO)}")
    return 0


def compare(stock: dict[str, str], hot: dict[str, str], excluded: set[str]) -> tuple[list[str], list[str]]:
    """The tests that are good on stock Ignite and not with hotloop, and the ones the record does not know."""
    regressions = [k for k, v in stock.items() if v in GOOD and k not in excluded and hot.get(k) != v]
    unrecorded = [k for k in hot if k not in stock]
    return sorted(regressions), sorted(unrecorded)


def check(root: Path, jobs: int) -> int:
    started = time.monotonic()
    recorded = json.loads(RECORD.read_text())
    stock = recorded["outcomes"]
    report = _full_run(root, bind=True, jobs=jobs)
    hot = report["outcomes"]
    regressions, unrecorded = compare(stock, hot, set(report["excluded"]))
    flaky: list[str] = []
    if regressions:  # run the differing tests once more in a fresh process; only a second difference counts
        again = _rerun(root, regressions, bind=True)
        hot.update({k: again.get(k, "missing") for k in regressions})
        flaky = [k for k in regressions if hot[k] == stock[k]]
        regressions = [k for k in regressions if k not in flaky]
    seconds = time.monotonic() - started
    print(f"ignite_suite: bound in place of Ignite's: {', '.join(sorted(report['bound']))}")
    print(f"ignite_suite: stock Ignite {recorded['ignite']} (recorded): {_format_counts(recorded['counts'])}")
    print(f"ignite_suite: hotloop bound in: {_format_counts(counts(hot, len(report['excluded'])))} in {seconds:.0f} s")
    print(f"ignite_suite: slowest files: {_slowest_files(report['durations'])}")
    for nodeid in flaky:
        print(f"ignite_suite: differed once, matched stock Ignite on the rerun: {nodeid}")
    problems = _problems(report)
    for problem in problems:
        print(f"ignite_suite: {problem}")
    if unrecorded:
        print(f"ignite_suite: {len(unrecorded)} tests are not in {RECORD.name}; re-record with --record:")
        print("\n".join(f"  {k}" for k in unrecorded))
    if regressions:
        print(f"ignite_suite: {len(regressions)} tests pass on stock Ignite and not with hotloop bound in:")
        print("\n".join(f"  {k}: {stock[k]} on Ignite, {hot.get(k, 'missing')} on hotloop" for k in regressions))
    if problems or unrecorded or regressions:
        return 1
    print("ignite_suite: OK, every test that passes on stock Ignite passes with hotloop bound in")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="run stock Ignite and rewrite the recorded outcomes")
    parser.add_argument("--jobs", type=int, default=2, help="pytest processes run at once (default: 2)")
    parser.add_argument("--list", action="store_true", help="list the test files run and left out, with why")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs should be at least 1, got {args.jobs}")
    root = extract_tests(fetch_sdist())
    files = selection(root)
    if args.list:
        print("\n".join(f"{path}: {why}" for path, why in files.items()))
        return 0
    return record(root, args.jobs) if args.record else check(root, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
