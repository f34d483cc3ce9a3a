"""``optnet mnist``: the IDX reader, the data folders, the digits split, the runs."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest

from optnet.experiments import _mnist_data as md
from optnet.experiments import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _idx_bytes(array):
    """An IDX file's bytes (unsigned bytes) for ``array``."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def _fake_mnist(folder, n_train=40, n_test=20, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n)
        # Images that depend on the label, so that there is something to learn.
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, y in enumerate(labels):
            images[i, 2 * y:2 * y + 3, :] = 255
        for name, arr in zip(md.MNIST_FILES[split], (images, labels)):
            data = _idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


def test_read_idx_round_trip_plain_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    np.testing.assert_array_equal(md.read_idx(tmp_path / "a", 3), arr)
    np.testing.assert_array_equal(md.read_idx(tmp_path / "a.gz", 3), arr)


def test_read_idx_rejects_malformed_files(tmp_path):
    good = _idx_bytes(np.zeros((2, 3, 4)))
    cases = {
        "magic number 0x00000803; expected 0x00000801": (good, 1),   # images read as labels
        "magic number 0x08000803": (b"\x08" + good[1:], 3),           # nonzero first byte
        "magic number 0x00000d03": (good[:2] + b"\x0d" + good[3:], 3),  # float type code
        "header says shape \\(2, 3, 4\\) \\(24 bytes": (good[:-1], 3),  # truncated data
        "holds 25 bytes": (good + b"\x00", 3),                         # trailing bytes
        "too short": (b"\x00\x00", 3),
        "header truncated": (good[:10], 3),
    }
    for i, (message, (data, ndim)) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=message) as exc:
            md.read_idx(path, ndim)
        assert str(path) in str(exc.value)
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot be read"):
        md.read_idx(bad_gz, 3)


def test_load_mnist_folder(tmp_path):
    (xtr, ytr), (xte, yte) = md.load_mnist(_fake_mnist(tmp_path / "m", gz=True))
    assert xtr.shape == (40, 784) and xte.shape == (20, 784) and xtr.dtype == np.float32
    assert 0.0 <= xtr.min() and xtr.max() == 1.0
    assert ytr.dtype == np.int64 and ytr.max() <= 9
    with pytest.raises(ValueError, match="missing t10k-labels-idx1-ubyte"):
        folder = _fake_mnist(tmp_path / "n")
        (folder / "t10k-labels-idx1-ubyte").unlink()
        md.load_mnist(folder)
    folder = _fake_mnist(tmp_path / "o")
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(39)))
    with pytest.raises(ValueError, match="40 images but .* 39 labels"):
        md.load_mnist(folder)
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.full(40, 10)))
    with pytest.raises(ValueError, match="digits 0-9, received 10"):
        md.load_mnist(folder)
    with pytest.raises(ValueError, match="not a folder"):
        md.load_mnist(tmp_path / "nowhere")


def test_digits_split_is_fixed_and_disjoint():
    pytest.importorskip("sklearn")
    (xtr, ytr), (xte, yte) = md.load_digits_split()
    (xtr2, _), (xte2, _) = md.load_digits_split()
    assert xtr.shape == (1438, 64) and xte.shape == (359, 64)
    np.testing.assert_array_equal(xte, xte2)
    np.testing.assert_array_equal(xtr, xtr2)
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0
    assert set(np.unique(yte)) == set(range(10))
    # Disjoint: no test image also in the training set (the digits set has no duplicates
    # across the two halves of this split).
    train_rows = {row.tobytes() for row in xtr}
    assert sum(row.tobytes() in train_rows for row in xte) == 0


def _metrics(out):
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_digits_run_end_to_end(tmp_path):
    pytest.importorskip("sklearn")
    result = cli.run_experiment(["mnist", "--epochs", "3", "--limit", "400", "--hidden", "64",
                                 "--batch-size", "50", "--out", str(tmp_path)])
    rows = _metrics(tmp_path)
    assert list(rows[0]) == ["model", "epoch", "split", "loss", "error", "seconds"]
    assert len(rows) == 2 * 3 * 2
    assert {r["model"] for r in rows} == {"optnet", "fc"}
    opt_train = [float(r["loss"]) for r in rows if r["model"] == "optnet" and r["split"] == "train"]
    assert opt_train[-1] < opt_train[0]                    # it learns
    assert result["optnet"]["test_error"] < 0.8            # chance is 0.9
    assert result["optnet"]["unsolved"] == 0
    assert "gap" in result
    text = (tmp_path / "results.md").read_text()
    assert "| optnet | 3 |" in text and "| fc | 3 |" in text and "within 1 point" in text
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_mnist_folder_run(tmp_path):
    folder = _fake_mnist(tmp_path / "data")
    cli.run_experiment(["mnist", "--data-dir", str(folder), "--epochs", "1", "--hidden", "16",
                        "--models", "optnet", "--batch-size", "20", "--out", str(tmp_path / "o")])
    rows = _metrics(tmp_path / "o")
    assert [(r["model"], r["split"]) for r in rows] == [("optnet", "train"), ("optnet", "test")]
    assert "MNIST from" in (tmp_path / "o" / "results.md").read_text()


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="--models"):
        cli.run_experiment(["mnist", "--models", "cnn", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--data-dir"):
        cli.run_experiment(["mnist", "--data-dir", str(tmp_path / "none"), "--out",
                            str(tmp_path)])
