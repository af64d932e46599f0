"""``hotloop.demo``: the speed comparison's figures and wording, and the up-front check of what a run needs.

The demo's end-to-end runs are in ``test_cli.py`` (through the command line).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hotloop import cli
from hotloop.demo import (
    DemoConfig,
    DemoReport,
    RunResult,
    _report_lines,
    check_requirements,
    epoch_ratios,
    run_demo,
    speed_verdict,
)


def test_epoch_ratios_pair_the_epochs_and_leave_out_the_first():
    hot = RunResult("hotloop", epoch_seconds=[9.0, 1.0, 2.0, 4.0])
    ign = RunResult("ignite", epoch_seconds=[5.0, 2.0, 2.0, 2.0])
    assert epoch_ratios(hot, ign) == [2.0, 1.0, 0.5]  # Ignite's seconds ÷ hotloop's: hotloop's samples/s ÷ Ignite's
    one = epoch_ratios(RunResult("hotloop", epoch_seconds=[2.0]), RunResult("ignite", epoch_seconds=[3.0]))
    assert one == [1.5]  # a single epoch is all there is


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([0.81, 1.38, 0.88, 1.91], "1.13× (median of 4 per-epoch ratios, range 0.81–1.91×): equal within noise"),
        (
            [1.2, 1.5, 1.3],
            "1.30× (median of 3 per-epoch ratios, range 1.20–1.50×): hotloop faster in every timed epoch",
        ),
        ([0.7, 0.9], "0.80× (median of 2 per-epoch ratios, range 0.70–0.90×): hotloop slower in every timed epoch"),
        ([1.0, 1.4], "1.20× (median of 2 per-epoch ratios, range 1.00–1.40×): equal within noise"),
        ([1.25], "1.25× (one timed epoch: no spread to judge the noise by; run 3 or more epochs)"),
        ([], "n/a (no timed epoch)"),
    ],
)
def test_speed_verdict_gives_median_range_and_what_they_allow(ratios, expected):
    assert speed_verdict(ratios) == expected


def test_report_says_1_epoch_and_compares_through_the_per_epoch_ratios():
    hot = RunResult("hotloop", 0.9, 0.3, [1.0], train_samples=100)
    ign = RunResult("ignite", 0.9, 0.3, [2.0], train_samples=100)
    lines = _report_lines(DemoReport(hot, ign, [], "digits", "cpu"), DemoConfig(epochs=1))
    device = next(line for line in lines if line.strip().startswith("device:"))
    assert ", 1 epoch," in device
    assert any(line.strip().startswith("hotloop ÷ Ignite: 2.00× (one timed epoch") for line in lines)


def test_missing_packages_are_named_together_before_any_work(hide_packages, tmp_path):
    hide_packages("sklearn", "tqdm")
    out = io.StringIO()
    with pytest.raises(ModuleNotFoundError) as raised:
        run_demo(DemoConfig(epochs=1, loader="memory", output=tmp_path / "out"), out=out)
    assert str(raised.value) == (
        "hotloop demo needs tqdm and scikit-learn, which are not installed: pip install 'hotloop[bench]'"
    )
    assert out.getvalue() == "" and not (tmp_path / "out").exists()


def test_loader_dali_without_dali_says_how_to_get_it_or_avoid_it(hide_packages):
    hide_packages("nvidia.dali")
    with pytest.raises(ModuleNotFoundError) as raised:
        check_requirements(DemoConfig(loader="dali"))
    assert str(raised.value) == (
        "--loader dali reads the digits with NVIDIA DALI, which is not installed: pip install 'hotloop[dali]' "
        "(or use --loader memory)"
    )


@pytest.mark.parametrize(
    ("config", "hidden", "named"),
    [
        (DemoConfig(loader="auto"), ("PIL",), "Pillow"),  # DALI installed: the digits are written as PNG files
        (DemoConfig(data=Path("imgs")), ("nvidia.dali", "PIL"), "Pillow"),  # --data without DALI: decoded by PIL
        (DemoConfig(data=Path("imgs")), ("sklearn",), None),  # --data: no digits, no scikit-learn
        (DemoConfig(loader="memory"), ("PIL", "nvidia.dali"), None),  # in-memory digits: no image files
    ],
)
def test_what_each_input_path_needs(config, hidden, named, hide_packages):
    if named == "Pillow" and "nvidia.dali" not in hidden:
        pytest.importorskip("nvidia.dali", reason="the DALI path is chosen only where DALI is installed")
    hide_packages(*hidden)
    if named is None:
        check_requirements(config)
        return
    with pytest.raises(ModuleNotFoundError, match=f"needs {named}, which is not installed: .*'hotloop\\[bench\\]'"):
        check_requirements(config)


def test_command_line_reports_the_missing_package_in_one_line(hide_packages, tmp_path, capsys):
    hide_packages("sklearn")
    assert cli.main(["demo", "--epochs", "1", "--loader", "memory", "--output", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "hotloop demo: error: hotloop demo needs scikit-learn, which is not installed: pip install 'hotloop[bench]'\n"
    )
    assert captured.out == "" and not (tmp_path / "out").exists()
