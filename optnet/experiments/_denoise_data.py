"""Synthetic piecewise-constant signals for the denoising experiment.

The generator follows the description in Amos & Kolter, *OptNet* (ICML 2017),
section 4.2: signals of length 100, piecewise constant with between 1 and 9
pieces whose breakpoints are uniform, integer heights uniform in [10, 100), and
independent Gaussian noise of standard deviation 10 added to every sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LENGTH = 100
"""Samples per signal (the paper's n = 100)."""
MIN_PIECES, MAX_PIECES = 1, 9
"""Pieces per signal, both ends included."""
LOW, HIGH = 10, 100
"""Heights are integers in [LOW, HIGH)."""
NOISE_STD = 10.0
"""Standard deviation of the additive Gaussian noise."""


@dataclass(frozen=True)
class Signals:
    """A set of signals.

    Attributes
    ----------
    noisy : ndarray, shape (N, length), float64
        Clean signal plus noise: the model's input.
    clean : ndarray, shape (N, length), float64
        The piecewise-constant target (integer valued).
    pieces : ndarray, shape (N,), int64
        Number of pieces each clean signal was drawn with (adjacent pieces may
        share a height, so the visible number of jumps can be smaller).
    """

    noisy: np.ndarray
    clean: np.ndarray
    pieces: np.ndarray

    def __len__(self):
        return len(self.noisy)

    def subset(self, index):
        """The signals at ``index`` (a slice or an integer array)."""
        return Signals(self.noisy[index], self.clean[index], self.pieces[index])


def generate(n_signals, *, length=LENGTH, noise_std=NOISE_STD, seed=0):
    """Draw ``n_signals`` noisy piecewise-constant signals.

    For each signal: the number of pieces ``k`` is uniform in {1, ..., 9} (at
    most ``length`` pieces); the ``k - 1`` breakpoints are a uniformly random
    subset of the ``length - 1`` gaps between samples; each piece's height is an
    integer uniform in [10, 100); every sample gets independent N(0, noise_std²)
    noise.

    Parameters
    ----------
    n_signals : int
        Number of signals N (>= 1).
    length : int
        Samples per signal (>= 2).
    noise_std : float
        Noise standard deviation (>= 0).
    seed : int
        Seed of the NumPy generator: the same seed gives the same signals.

    Returns
    -------
    Signals
        ``noisy`` and ``clean`` of shape (N, length), ``pieces`` of shape (N,).
    """
    if int(n_signals) != n_signals or n_signals < 1:
        raise ValueError(f"n_signals must be a positive integer, received {n_signals!r}")
    if int(length) != length or length < 2:
        raise ValueError(f"length must be an integer >= 2, received {length!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, received {noise_std!r}")
    n_signals, length = int(n_signals), int(length)
    rng = np.random.default_rng(seed)
    max_pieces = min(MAX_PIECES, length)
    pieces = rng.integers(MIN_PIECES, max_pieces + 1, size=n_signals)
    clean = np.empty((n_signals, length))
    for i, k in enumerate(pieces):
        # Breakpoint b means a new piece starts at sample b (1 <= b <= length - 1).
        breaks = np.sort(rng.choice(np.arange(1, length), size=k - 1, replace=False))
        heights = rng.integers(LOW, HIGH, size=k)
        # Piece index of every sample: how many breakpoints lie at or before it.
        clean[i] = heights[np.searchsorted(breaks, np.arange(length), side="right")]
    noisy = clean + noise_std * rng.standard_normal((n_signals, length))
    return Signals(noisy, clean, pieces.astype(np.int64))


def split(signals, test_fraction=0.1):
    """Split into training and held-out signals: the last ``test_fraction`` are held out.

    Returns
    -------
    train, test : Signals
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), received {test_fraction!r}")
    n_test = max(1, int(round(len(signals) * test_fraction)))
    if n_test >= len(signals):
        raise ValueError(f"{len(signals)} signals are too few to hold out {test_fraction:.0%}")
    cut = len(signals) - n_test
    return signals.subset(slice(0, cut)), signals.subset(slice(cut, None))
