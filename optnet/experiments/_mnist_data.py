"""Digit images for ``optnet mnist``: the MNIST IDX files, or scikit-learn's 8x8 digits.

The IDX format (LeCun et al., the MNIST distribution): a big-endian header of two
zero bytes, a type byte (0x08: unsigned bytes), the number of dimensions, then one
32-bit size per dimension, then the data in C order. Images are ``(N, 28, 28)``,
labels ``(N,)``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08


def read_idx(path, ndim):
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions (gzip if it ends in .gz).

    Returns
    -------
    uint8 ndarray of the header's shape.

    Raises
    ------
    ValueError
        Naming the file, when the magic number, the number of dimensions or the
        data size disagree with the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot be read ({exc})") from exc
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    want = (_UBYTE << 8) | ndim
    if magic != want:
        raise ValueError(f"{path}: magic number 0x{magic:08x}; expected 0x{want:08x} (IDX, "
                         f"unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: header truncated ({len(raw)} bytes, expected {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ValueError(f"{path}: header says shape {shape} ({size} bytes of data), the file "
                         f"holds {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(data_dir, name):
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise ValueError(f"--data-dir {data_dir}: missing {name} (or {name}.gz); expected the four "
                     f"MNIST files {', '.join(n for pair in MNIST_FILES.values() for n in pair)}")


def load_mnist(data_dir):
    """The MNIST train and test sets from ``data_dir``.

    Returns
    -------
    ((x_train, y_train), (x_test, y_test)) : x float32 ``(N, 784)`` in [0, 1], y int64 ``(N,)``.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"--data-dir {data_dir}: not a folder")
    out = []
    for images_name, labels_name in MNIST_FILES.values():
        images_path, labels_path = _find(data_dir, images_name), _find(data_dir, labels_name)
        images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images_path}: {images.shape[0]} images but {labels_path} has "
                             f"{labels.shape[0]} labels")
        if images.shape[0] == 0:
            raise ValueError(f"{images_path}: holds no images")
        if labels.max() > 9:
            raise ValueError(f"{labels_path}: labels must be digits 0-9, received "
                             f"{int(labels.max())}")
        x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
        out.append((x, labels.astype(np.int64)))
    return tuple(out)


def load_digits_split(test_fraction=0.2):
    """scikit-learn's 8x8 digits (1797 images, shipped with the package), split at random
    with a fixed seed (0) independent of ``--seed``.

    Returns
    -------
    ((x_train, y_train), (x_test, y_test)) : x float32 ``(N, 64)`` in [0, 1], y int64 ``(N,)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])
