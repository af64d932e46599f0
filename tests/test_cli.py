"""The ``hotloop`` command: help texts, one-line usage errors, ``hotloop demo`` end to end, ``python -m hotloop``."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from hotloop import cli
from hotloop.demo import DemoConfig, RunResult, make_model, run_demo

_DEMO_OPTIONS = ("--epochs", "--batch-size", "--device", "--compile", "--data", "--output", "--seed", "--loader")
_BENCH_OPTIONS = ("--quick", "--only", "--output", "--json", "--check", "--rounds", "--warmup")


def _has_dali() -> bool:
    try:
        from hotloop.data import HAS_DALI
    except ImportError:
        return False
    return bool(HAS_DALI)


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_the_commands(capsys):
    out = _help(["--help"], capsys)
    assert "usage: hotloop" in out
    assert "demo" in out and "bench" in out


@pytest.mark.parametrize(("command", "options"), [("demo", _DEMO_OPTIONS), ("bench", _BENCH_OPTIONS)])
def test_subcommand_help_lists_every_option(command, options, capsys):
    out = _help([command, "--help"], capsys)
    assert f"usage: hotloop {command}" in out
    missing = [option for option in options if option not in out]
    assert not missing, f"hotloop {command} --help does not mention {missing}"
    assert "examples:" in out


def test_version(capsys):
    out = _help(["--version"], capsys)
    assert out.startswith("hotloop ")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["demo", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
        (["demo", "--batch-size", "x"], "argument --batch-size: expected a positive integer, got 'x'"),
        (["demo", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["demo", "--data", "/no/such/folder"], "argument --data: '/no/such/folder' does not exist"),
        (["demo", "--bogus"], "hotloop demo: error: unrecognized arguments: --bogus"),
        (["bench", "--rounds", "0"], "argument --rounds: expected a positive integer, got '0'"),
    ],
)
def test_bad_options_exit_2_with_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "error:" in lines[0] and expected in lines[0]
    assert captured.out == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_cuda_without_cuda_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["demo", "--device", "cuda"])
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "CUDA is not available" in err and "\n" not in err


def test_data_folder_without_splits_fails_in_one_line(tmp_path, capsys):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    code = cli.main(["demo", "--data", str(tmp_path / "images"), "--output", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hotloop demo: error: --data") and "train/ and val/" in err and "\n" not in err


def test_bench_unknown_only_fails_naming_the_cases(capsys):
    assert cli.main(["bench", "--only", "nope", "--no-progress"]) == 2
    assert "engine_overhead" in capsys.readouterr().err


def test_bench_writes_table_json_and_charts(tmp_path, capsys):
    argv = ["bench", "--quick", "--rounds", "1", "--warmup", "0", "--only", "no_handlers", "--output", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| engine_overhead/no_handlers "))
    assert "| ignite " in row and "| hotloop " in row and ("PASS" in row or "FAIL" in row)
    assert (tmp_path / "results.md").read_text(encoding="utf-8").startswith("# hotloop bench")
    report = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert [entry["scenario"] for entry in report["scenarios"]] == ["no_handlers"]
    for chart in ("us_per_iter.png", "ratios.png"):
        assert (tmp_path / chart).read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One short demo through ``cli.main`` (in-memory digits, CPU): its exit code, stdout and output folder."""
    output = tmp_path_factory.mktemp("demo")
    argv = ["demo", "--epochs", "2", "--batch-size", "128", "--device", "cpu", "--loader", "memory"]
    stdout = io.StringIO()
    saved, sys.stdout = sys.stdout, stdout
    try:
        code = cli.main([*argv, "--output", str(output)])
    finally:
        sys.stdout = saved
    return code, stdout.getvalue(), output


def test_demo_prints_epochs_and_the_report(demo_run):
    code, out, _ = demo_run
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("hotloop demo: scikit-learn digits, 1438 train / 359 val")
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all("val accuracy" in line and "val loss" in line and "samples/s" in line for line in epochs)
    assert "hotloop demo report" in lines
    report = {line.split(":")[0].strip(): line for line in lines[lines.index("hotloop demo report") + 1 :]}
    assert {"data", "device", "accuracy", "samples/s", "checkpoints"} <= set(report)
    assert "hotloop 0." in report["accuracy"] and "Ignite 0." in report["accuracy"]
    assert "hotloop" in report["samples/s"] and "Ignite" in report["samples/s"]
    # Two epochs: one timed epoch (the first pays for warm-up), so one ratio and no spread to judge the noise by.
    assert re.fullmatch(r"\s*hotloop ÷ Ignite: \d+\.\d\d× \(one timed epoch: no spread.*\)", report["hotloop ÷ Ignite"])


def test_demo_writes_loadable_checkpoints(demo_run):
    _, out, output = demo_run
    files = sorted((output / "checkpoints").glob("checkpoint_*_accuracy=*.pt"))
    assert len(files) == 2  # n_saved=2 and two epochs
    assert all(str(path) in out for path in files)
    state = torch.load(files[-1], map_location="cpu", weights_only=False)
    assert set(state) == {"model", "optimizer", "trainer"}
    model = make_model()
    model.load_state_dict(state["model"])


def test_demo_hotloop_and_ignite_learn_the_same_model(demo_run):
    """Same initial weights, data order and seed on CPU, eager: hotloop's trainer must give Ignite's numbers."""
    _, out, _ = demo_run
    line = next(line for line in out.splitlines() if line.strip().startswith("accuracy:"))
    found = re.fullmatch(
        r"\s*accuracy:\s+hotloop (?P<acc>[\d.]+) \(val loss (?P<loss>[\d.]+)\)\s+"
        r"Ignite (?P<ign_acc>[\d.]+) \(val loss (?P<ign_loss>[\d.]+)\)",
        line,
    )
    assert found, line
    assert found["acc"] == found["ign_acc"] and found["loss"] == found["ign_loss"]
    assert float(found["acc"]) > 0.5  # two epochs of SGD on digits: far above chance (0.1)


@pytest.mark.skipif(not _has_dali(), reason="NVIDIA DALI is not installed (pip install 'hotloop[dali]')")
def test_demo_on_image_folders_through_dali(tmp_path):
    from hotloop.data import write_digits_folder

    data = tmp_path / "data"
    for split in ("train", "val"):
        write_digits_folder(data / split, split=split)
    out = io.StringIO()
    config = DemoConfig(
        epochs=1, batch_size=128, device="cpu", data=data, image_size=8, output=tmp_path / "out", compare=False
    )
    report = run_demo(config, out=out)
    assert report.ignite is None
    assert "image_folder_loader(backend='dali')" in out.getvalue()
    assert 0.0 <= report.hotloop.accuracy <= 1.0
    assert len(report.checkpoints) == 1 and report.checkpoints[0].is_file()


def test_run_result_throughput_skips_the_first_epoch():
    result = RunResult("hotloop", epoch_seconds=[10.0, 1.0, 2.0, 1.0], train_samples=100)
    assert result.samples_per_second == pytest.approx(100.0)  # median of 1, 2, 1 seconds
    assert RunResult("x", epoch_seconds=[4.0], train_samples=100).samples_per_second == pytest.approx(25.0)


def test_demo_config_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs should be a positive integer, got 0"):
        DemoConfig(epochs=0)
    with pytest.raises(ValueError, match="device should be 'auto', 'cpu' or 'cuda', got 'tpu'"):
        DemoConfig(device="tpu")
    with pytest.raises(TypeError, match="run_demo expects a DemoConfig"):
        run_demo({"epochs": 1})  # type: ignore[arg-type]


def test_python_dash_m_hotloop_help():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "hotloop", "--help"], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage: hotloop" in done.stdout and "demo" in done.stdout and "bench" in done.stdout


def test_python_dash_m_hotloop_bad_option_has_no_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "hotloop", "demo", "--epochs", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
