"""The ``optnet`` command and the experiments' shared infrastructure."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optnet.experiments import EXPERIMENTS, _common, cli

ROOT = Path(__file__).resolve().parents[1]


def test_registry_and_help_list_every_experiment(capsys):
    assert EXPERIMENTS == ["sudoku", "denoise", "mnist", "demo"]
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ("sudoku", "mnist", "demo"):
        assert name in text
    # The one-line help comes from each module's HELP, read without importing it.
    assert "4x4 Sudoku" in text and "random QPs" in text


def test_help_imports_neither_torch_nor_matplotlib():
    code = ("import sys\nfrom optnet.experiments import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'jax', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    real = cli.importlib.import_module

    def fake(name, *a, **k):
        if name == "optnet.experiments.demo":
            raise ModuleNotFoundError("No module named 'tqdm'", name="tqdm")
        return real(name, *a, **k)

    monkeypatch.setattr(cli.importlib, "import_module", fake)
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo"])
    assert "tqdm" in str(exc.value) and "optnet[experiments]" in str(exc.value)


def test_unknown_experiment_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["nonesuch"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_demo_end_to_end(capsys):
    result = cli.run_experiment(["demo", "--batch", "4", "--n", "6"])
    assert result["statuses"]["PRIMAL_INFEASIBLE"] == 1
    assert result["statuses"]["DUAL_INFEASIBLE"] == 1
    assert result["statuses"]["SOLVED"] == 2
    assert "PRIMAL_INFEASIBLE" in capsys.readouterr().out
    assert cli.main(["demo", "--batch", "3", "--n", "4"]) == 0
    with pytest.raises(ValueError, match="--batch"):
        cli.run_experiment(["demo", "--batch", "2"])


def test_examples_demo_is_a_working_wrapper():
    out = subprocess.run([sys.executable, "examples/demo.py", "--batch", "3", "--n", "4"],
                         cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout
    assert "statuses:" in out and "DUAL_INFEASIBLE 1" in out


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "optnet.experiments", "demo", "--batch", "3",
                          "--n", "4"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "PRIMAL_INFEASIBLE 1" in out


def test_pyproject_declares_the_command_and_the_extra():
    # Plain text checks: tomllib is not in Python 3.10's standard library.
    text = (ROOT / "pyproject.toml").read_text()
    assert '\n[project.scripts]\noptnet = "optnet.experiments.cli:main"\n' in text
    assert 'experiments = ["tqdm", "matplotlib", "scikit-learn", "optax"]' in text


# --------------------------------------------------------------------------- _common


def _parser(name="toy"):
    parser = argparse.ArgumentParser(prog=f"optnet {name}")
    _common.add_common_arguments(parser, epochs=7, batch_size=32)
    return parser


def test_common_arguments_defaults_and_validation(capsys):
    args = _parser().parse_args([])
    assert (args.epochs, args.batch_size, args.seed, args.device, args.quick) == (7, 32, 0,
                                                                                 "cpu", False)
    assert args.out == Path("runs") / "toy"
    args = _parser().parse_args(["--out", "x", "--quick", "--epochs", "2"])
    assert args.out == Path("x") and args.quick and args.epochs == 2
    with pytest.raises(SystemExit):
        _parser().parse_args(["--epochs", "0"])
    assert "--epochs must be a positive integer" in capsys.readouterr().err


def test_seed_everything_is_deterministic():
    import torch

    draws = []
    for _ in range(2):
        rng = _common.seed_everything(3)
        draws.append((rng.random(), float(torch.rand(1)), np.random.rand()))  # noqa: NPY002
    assert draws[0] == draws[1]
    _common.seed_everything(4)
    assert float(torch.rand(1)) != draws[0][1]


def test_metrics_log_columns_and_rows(tmp_path):
    log = _common.MetricsLog(tmp_path / "run")
    log.add("m", 1, "train", 0.5, 0.25, 0.01)
    log.add("m", 1, "test", 0.75, 0.5, 0.02)
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["model", "epoch", "split", "loss", "error", "seconds"]
    assert rows[1] == ["m", "1", "train", "0.5", "0.25", "0.01"]
    assert len(rows) == 3
    assert _common.read_metrics(tmp_path / "run" / "metrics.csv")[1]["error"] == 0.5
    _common.MetricsLog(tmp_path / "run")  # fresh by default: the header only
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 1


def test_run_epoch_weights_by_items_and_steps_the_optimizer():
    import torch

    w = torch.nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.SGD([w], lr=0.5)

    def step(batch):
        x = torch.tensor(batch, dtype=torch.float32)
        return ((w * x) ** 2).mean(), float(len(batch) == 1), len(batch)

    loss, err, sec = _common.run_epoch(step, [[1.0, 1.0, 1.0], [0.0]], desc="t", train=False,
                                       show=False)
    assert loss == pytest.approx(0.75) and err == pytest.approx(0.25) and sec > 0
    assert float(w.detach()) == 1.0  # evaluation: no step
    _common.run_epoch(step, [[1.0]], desc="t", train=True, optimizer=opt, show=False)
    assert float(w.detach()) == pytest.approx(0.0)  # w - 0.5 * d(w^2)/dw = 1 - 0.5 * 2
    with pytest.raises(ValueError, match="no batches"):
        _common.run_epoch(step, [], desc="t", train=False, show=False)


def test_write_results_table(tmp_path):
    path = _common.write_results(tmp_path, "Title", [["a", 0.123456, 3]], ["model", "x", "n"])
    text = path.read_text()
    assert text.startswith("# Title\n")
    assert "| model | x | n |" in text and "| a | 0.1235 | 3 |" in text
    with pytest.raises(ValueError, match="cells"):
        _common.write_results(tmp_path, "T", [["a"]], ["x", "y"])


def test_load_npz_accepts_good_and_rejects_bad_files(tmp_path):
    spec = {"x": (("N", 2), "f"), "y": (("N",), "iu")}
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((3, 2)), y=np.arange(3))
    out = _common.load_npz(good, spec)
    assert out["x"].shape == (3, 2) and out["y"].tolist() == [0, 1, 2]

    cases = {
        "missing key 'y'": {"x": np.zeros((3, 2))},
        "key 'x' has shape \\(3, 5\\); expected \\(3, 2\\)": {"x": np.zeros((3, 5)),
                                                              "y": np.arange(3)},
        "key 'y' has shape \\(4,\\); expected \\(3,\\)": {"x": np.zeros((3, 2)),
                                                        "y": np.arange(4)},
        "key 'x' has dtype <U1": {"x": np.full((3, 2), "a"), "y": np.arange(3)},
        "key 'x' has shape \\(6,\\)": {"x": np.zeros(6), "y": np.arange(3)},
    }
    for i, (message, arrays) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.npz"
        np.savez(bad, **arrays)
        with pytest.raises(ValueError, match=message) as exc:
            _common.load_npz(bad, spec)
        assert str(bad) in str(exc.value)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.array([{"a": 1}] * 3, dtype=object), y=np.arange(3))
    with pytest.raises(ValueError, match="pickle"):
        _common.load_npz(pickled, spec)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="junk.npz"):
        _common.load_npz(junk, spec)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        _common.load_npz(single, spec)


def test_plot_curves_writes_a_small_png(tmp_path):
    pytest.importorskip("matplotlib")
    from optnet.experiments._plots import plot_curves

    log = _common.MetricsLog(tmp_path)
    for model in ("a", "b"):
        for epoch in (1, 2, 3):
            for split in ("train", "test"):
                log.add(model, epoch, split, 1.0 / epoch, 0.5 / epoch, 0.1)
    png = plot_curves(tmp_path / "metrics.csv", tmp_path / "c.png", title="t")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 200_000
    with pytest.raises(ValueError, match="metric"):
        plot_curves(tmp_path / "metrics.csv", tmp_path / "d.png", metric="nope", title="t")
