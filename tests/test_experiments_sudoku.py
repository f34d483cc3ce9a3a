"""``optnet sudoku``: the puzzle generator, the true constraints, the data loader, the runs."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from optnet.experiments import _sudoku_data as sd
from optnet.experiments import cli, sudoku

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _is_sudoku(grid):
    """Independent check: rows, columns and 2x2 boxes of a (4, 4) grid are permutations."""
    g = np.asarray(grid).reshape(4, 4)
    units = [g[i] for i in range(4)] + [g[:, i] for i in range(4)]
    units += [g[r:r + 2, c:c + 2].ravel() for r in (0, 2) for c in (0, 2)]
    return all(sorted(u.tolist()) == [0, 1, 2, 3] for u in units)


@pytest.fixture(scope="module")
def all_boards():
    """All 4x4 Sudoku boards by brute force over rows that are permutations: (288, 16)."""
    perms = list(itertools.permutations(range(4)))
    boards = [sum(rows, ()) for rows in itertools.product(perms, repeat=4) if _is_sudoku(
        sum(rows, ()))]
    return np.array(boards)


def _completions(puzzle, all_boards):
    """How many of the 288 boards agree with a puzzle's givens ((16,), -1 blank)."""
    given = puzzle >= 0
    return int(np.sum(np.all(all_boards[:, given] == puzzle[given], axis=1)))


def test_there_are_288_boards_and_the_generator_draws_all_of_them(all_boards):
    assert all_boards.shape == (288, 16)
    rng = np.random.default_rng(1)
    drawn = {tuple(sd.random_board(rng).ravel()) for _ in range(6000)}
    assert all(_is_sudoku(b) for b in drawn)
    assert drawn == {tuple(b) for b in all_boards}
    assert all(sd.is_valid_board(b) for b in all_boards[:20])
    assert not sd.is_valid_board(np.arange(16) % 4)


def test_puzzles_are_consistent_unique_and_have_0_to_15_givens(all_boards):
    rng = np.random.default_rng(2)
    features, labels = sd.generate(400, rng)
    assert features.shape == labels.shape == (400, 4, 4, 4)
    assert features.dtype == labels.dtype == np.float32
    assert np.all(labels.sum(-1) == 1)                       # solutions one-hot
    assert np.all(np.isin(features.sum(-1), (0, 1)))         # puzzles one-hot or blank
    assert np.all(features <= labels)                        # every given agrees
    solutions = labels.argmax(-1).reshape(-1, 16)
    assert all(_is_sudoku(s) for s in solutions)
    puzzles = np.where(features.sum(-1) > 0, features.argmax(-1), -1).reshape(-1, 16)
    givens = (puzzles >= 0).sum(1)
    assert givens.min() >= 0 and givens.max() <= 15
    # Unique: the brute-force list has exactly one board with these givens.
    assert all(_completions(p, all_boards) == 1 for p in puzzles)
    # The targets spread the givens from the fewest possible (4) to 15.
    assert givens.min() <= 5 and givens.max() == 15 and len(np.unique(givens)) >= 10


def test_removal_stops_only_when_no_cell_can_go(all_boards):
    rng = np.random.default_rng(3)
    board = sd.random_board(rng)
    puzzle = sd.make_puzzle(board, 0, rng)
    assert _completions(puzzle, all_boards) == 1
    # Minimal: blanking any remaining given makes the puzzle ambiguous.
    for cell in np.flatnonzero(puzzle >= 0):
        weaker = puzzle.copy()
        weaker[cell] = -1
        assert _completions(weaker, all_boards) > 1
    full = sd.make_puzzle(board, 15, rng)
    assert (full >= 0).sum() == 15


def test_count_solutions_agrees_with_brute_force(all_boards):
    rng = np.random.default_rng(4)
    for _ in range(200):
        board = all_boards[rng.integers(288)]
        puzzle = np.where(rng.random(16) < rng.random(), board, -1)
        want = _completions(puzzle, all_boards)
        assert sd.count_solutions(puzzle.tolist(), limit=300) == want
        assert sd.count_solutions(puzzle.tolist()) == min(want, 2)
    assert sd.count_solutions([0, 0] + [-1] * 14) == 0


def test_true_constraint_matrix_has_rank_40_and_holds_on_boards(all_boards):
    A = sd.constraint_matrix()
    assert A.shape == (64, 64)
    assert np.linalg.matrix_rank(A) == sudoku.N_EQ == 40
    z = sd.one_hot(all_boards).reshape(288, 64)
    np.testing.assert_array_equal(z @ A.T, 1.0)
    # A grid with a repeated digit in a row breaks some constraint.
    bad = all_boards[0].copy()
    bad[[0, 1]] = bad[[1, 0]]
    assert not np.all(sd.one_hot(bad).reshape(64) @ A.T == 1)


def test_principal_angles_measure_the_row_space():
    A = sd.constraint_matrix()
    basis = np.linalg.svd(A)[2][:40]  # an orthonormal basis of the true row space
    mix = np.random.default_rng(5).normal(size=(40, 40))
    np.testing.assert_allclose(sudoku.principal_angles(mix @ basis), 0, atol=1e-5)
    random = np.random.default_rng(6).random((40, 64))
    assert sudoku.principal_angles(random).max() > 45


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_puzzles_validates(tmp_path):
    features, labels = sd.generate(20, np.random.default_rng(7))
    good = _save(tmp_path / "good.npz", features=features, labels=labels)
    f, lab = sudoku.load_puzzles(good)
    np.testing.assert_array_equal(f, features)
    np.testing.assert_array_equal(lab, labels)
    two_hot = labels.copy()
    two_hot[0, 0, 0] = 1.0
    two_hot[0, 0, 0, :2] = 1.0
    wrong_given = features.copy()
    cell = np.argwhere(features.sum(-1) > 0)[0]
    wrong_given[tuple(cell)] = np.roll(wrong_given[tuple(cell)], 1)
    cases = [
        ("missing key 'labels'", {"features": features}),
        ("key 'features' has shape \\(20, 16, 4\\)",
         {"features": features.reshape(20, 16, 4), "labels": labels}),
        ("key 'labels' has shape \\(19, 4, 4, 4\\)", {"features": features,
                                                     "labels": labels[:19]}),
        ("key 'labels': every cell .* one-hot", {"features": features, "labels": two_hot}),
        ("key 'features': every cell", {"features": 2 * features, "labels": labels}),
        ("givens that disagree", {"features": wrong_given, "labels": labels}),
        ("dtype <U1", {"features": np.full((2, 4, 4, 4), "a"), "labels": labels[:2]}),
    ]
    for i, (message, arrays) in enumerate(cases):
        path = _save(tmp_path / f"bad{i}.npz", **arrays)
        with pytest.raises(ValueError, match=message):
            sudoku.load_puzzles(path)


def test_bad_options_raise_value_errors(tmp_path):
    with pytest.raises(ValueError, match="--models"):
        cli.run_experiment(["sudoku", "--models", "optnet,lstm", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--n-puzzles"):
        cli.run_experiment(["sudoku", "--n-puzzles", "0", "--out", str(tmp_path)])


def test_quick_settings_keep_explicit_options():
    parser = cli.build_parser(["sudoku"])
    quick = sudoku._settings(parser.parse_args(["sudoku", "--quick"]))
    assert quick["n_puzzles"] == 3000 and quick["epochs"] == 6 and quick["conv_width"] == 128
    assert quick["baseline_epochs"] == 6 and quick["models"] == ["optnet", "conv", "fc"]
    mixed = sudoku._settings(parser.parse_args(["sudoku", "--quick", "--epochs", "2",
                                                "--conv-width", "32"]))
    assert mixed["epochs"] == mixed["baseline_epochs"] == 2 and mixed["conv_width"] == 32
    full = sudoku._settings(parser.parse_args(["sudoku"]))
    assert (full["n_puzzles"], full["epochs"], full["conv_width"], full["conv_layers"],
            full["batch_size"], full["lr"]) == (10000, 5, 512, 10, 150, 0.1)
    with pytest.raises(ValueError, match="--lr-decay"):
        sudoku._settings(parser.parse_args(["sudoku", "--lr-decay", "1.5"]))


def _rows(out):
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, list(reader)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One short run of all three models (OptNet long enough to learn a little)."""
    out = tmp_path_factory.mktemp("sudoku")
    result = cli.run_experiment([
        "sudoku", "--n-puzzles", "1000", "--batch-size", "100", "--epochs", "6",
        "--baseline-epochs", "1", "--conv-width", "8", "--conv-layers", "2", "--fc-width", "16",
        "--out", str(out)])
    return out, result


def test_short_run_writes_metrics_results_and_plot(short_run):
    out, result = short_run
    header, rows = _rows(out)
    assert header == ["model", "epoch", "split", "loss", "error", "seconds"]
    per_model = {m: [r for r in rows if r[0] == m] for m in ("optnet", "conv", "fc")}
    assert len(per_model["optnet"]) == 7 + 6      # test at epochs 0-6, train at 1-6
    assert len(per_model["conv"]) == len(per_model["fc"]) == 2 + 1
    assert all(0.0 <= float(r[4]) <= 1.0 and float(r[3]) >= 0 for r in rows)
    text = (out / "results.md").read_text()
    assert "| optnet | 6 |" in text and "| conv | 1 |" in text and "| fc | 1 |" in text
    assert "principal angles largest" in text
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert np.load(out / "optnet_A.npy").shape == (40, 64)
    assert set(result) >= {"optnet", "conv", "fc", "seconds"}


def test_short_optnet_run_reduces_the_error_with_every_qp_solved(short_run):
    out, result = short_run
    _, rows = _rows(out)
    test_error = {int(r[1]): float(r[4]) for r in rows if r[0] == "optnet" and r[2] == "test"}
    test_loss = {int(r[1]): float(r[3]) for r in rows if r[0] == "optnet" and r[2] == "test"}
    assert test_error[0] == 1.0
    assert test_error[6] < 0.9                      # about 0.83 with seed 0
    assert test_loss[6] < test_loss[0] / 10
    assert result["optnet"]["unsolved"] == 0
    largest, mean = result["optnet"]["angles_deg"]
    assert mean < largest < 90


def test_data_file_round_trip_and_determinism(tmp_path):
    features, labels = sd.generate(60, np.random.default_rng(8))
    data = _save(tmp_path / "p.npz", features=features, labels=labels)
    runs = []
    for name in ("a", "b"):
        cli.run_experiment(["sudoku", "--data", str(data), "--models", "optnet,fc",
                            "--epochs", "1", "--batch-size", "30", "--out", str(tmp_path / name)])
        runs.append(_rows(tmp_path / name)[1])
    assert len(runs[0]) == 3 + 3
    # Same seed, same numbers (the seconds column aside).
    assert [r[:5] for r in runs[0]] == [r[:5] for r in runs[1]]


def test_jax_framework_trains_the_same_model(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    result = cli.run_experiment(["sudoku", "--framework", "jax", "--models", "optnet",
                                 "--n-puzzles", "100", "--batch-size", "30", "--epochs", "2",
                                 "--out", str(tmp_path)])
    _, rows = _rows(tmp_path)
    assert {r[0] for r in rows} == {"optnet-jax"} and len(rows) == 3 + 2
    test_loss = [float(r[3]) for r in rows if r[2] == "test"]
    assert test_loss[-1] < test_loss[0] / 2
    assert result["optnet-jax"]["unsolved"] == 0
    assert np.load(tmp_path / "optnet-jax_A.npy").shape == (40, 64)
