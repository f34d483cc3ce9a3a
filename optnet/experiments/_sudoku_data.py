"""4x4 Sudoku puzzles for the OptNet paper's Sudoku experiment (Amos & Kolter 2017, section 4.4).

A board is a 4x4 grid of digits 0-3 (printed 1-4) with 2x2 boxes: every row,
column and box holds each digit once. A puzzle keeps some cells ("givens") of a
board and blanks the others, so that the board is its only completion.

Encodings: boards and puzzles as one-hot arrays ``(N, 4, 4, 4)`` (row, column,
digit), a blank cell all zeros; and as digit arrays ``(N, 16)`` (row-major), a
blank -1.
"""

from __future__ import annotations

import numpy as np

SIZE = 4
BOX = 2

# Two boards, one from each orbit of the symmetry group the generator draws from
# (relabel digits, permute rows within bands, bands, columns within stacks, stacks,
# transpose): the first orbit has 96 boards, the second 192, together all 288.
_BASE_BOARDS = (
    np.array([[0, 1, 2, 3], [2, 3, 0, 1], [1, 0, 3, 2], [3, 2, 1, 0]]),
    np.array([[0, 1, 2, 3], [2, 3, 0, 1], [1, 2, 3, 0], [3, 0, 1, 2]]),
)
_ORBIT_SIZES = (96, 192)


def _peers():
    """For each cell (0-15), the other cells of its row, column and box."""
    peers = []
    for cell in range(SIZE * SIZE):
        r, c = divmod(cell, SIZE)
        same = set()
        for other in range(SIZE * SIZE):
            r2, c2 = divmod(other, SIZE)
            if other != cell and (r2 == r or c2 == c or
                                  (r2 // BOX == r // BOX and c2 // BOX == c // BOX)):
                same.add(other)
        peers.append(tuple(sorted(same)))
    return tuple(peers)


PEERS = _peers()


def is_valid_board(board):
    """Whether a (4, 4) digit grid has each digit once in every row, column and box."""
    board = np.asarray(board).reshape(SIZE, SIZE)
    want = set(range(SIZE))
    for i in range(SIZE):
        if set(board[i].tolist()) != want or set(board[:, i].tolist()) != want:
            return False
    for br in range(0, SIZE, BOX):
        for bc in range(0, SIZE, BOX):
            if set(board[br:br + BOX, bc:bc + BOX].ravel().tolist()) != want:
                return False
    return True


def random_board(rng):
    """A uniformly random valid board, (4, 4) digits.

    A base board is relabelled, its rows permuted within bands and the bands
    swapped, likewise its columns within stacks and the stacks, and transposed
    at random. Each base board is drawn in proportion to its orbit so that all
    288 boards are equally likely.
    """
    base = _BASE_BOARDS[int(rng.random() * 288 >= _ORBIT_SIZES[0])]
    digits = rng.permutation(SIZE)

    def line_order():
        bands = rng.permutation(SIZE // BOX)
        return np.concatenate([b * BOX + rng.permutation(BOX) for b in bands])

    board = digits[base][line_order()][:, line_order()]
    return board.T.copy() if rng.random() < 0.5 else board


def count_solutions(cells, limit=2):
    """Count the completions of a puzzle, stopping at ``limit``.

    Parameters
    ----------
    cells : sequence of 16 ints
        Row-major digits 0-3, -1 for a blank.
    limit : int
        Stop once this many completions are found (2 decides uniqueness).

    Returns
    -------
    int
        The number of completions found (at most ``limit``).
    """
    grid = list(cells)
    # A candidate bitmask per blank; search the blank with the fewest candidates first
    # (with the propagation this finds a unique puzzle's solution almost without branching).
    full = (1 << SIZE) - 1

    def candidates(cell):
        used = 0
        for p in PEERS[cell]:
            if grid[p] >= 0:
                used |= 1 << grid[p]
        return full & ~used

    def search():
        best, best_mask, best_count = -1, 0, SIZE + 1
        for cell in range(SIZE * SIZE):
            if grid[cell] < 0:
                mask = candidates(cell)
                n = bin(mask).count("1")
                if n == 0:
                    return 0
                if n < best_count:
                    best, best_mask, best_count = cell, mask, n
        if best < 0:
            return 1
        found = 0
        for d in range(SIZE):
            if best_mask >> d & 1:
                grid[best] = d
                found += search()
                grid[best] = -1
                if found >= limit:
                    break
        return min(found, limit)

    return search()


def make_puzzle(board, n_givens, rng):
    """Blank cells of ``board`` in random order while the puzzle stays uniquely solvable.

    A cell is blanked only if its value is still determined by the remaining
    cells (the puzzle has one completion); the removal stops once ``n_givens``
    cells are left or no further cell can be blanked (a 4x4 puzzle needs at
    least 4 givens).

    Parameters
    ----------
    board : (4, 4) int array, a valid board.
    n_givens : int in [0, 15], the target number of givens.

    Returns
    -------
    (16,) int array: the puzzle, -1 for blanks.
    """
    cells = np.asarray(board).ravel().copy()
    givens = SIZE * SIZE
    for cell in rng.permutation(SIZE * SIZE):
        if givens <= n_givens:
            break
        keep = cells[cell]
        cells[cell] = -1
        if count_solutions(cells.tolist()) == 1:
            givens -= 1
        else:
            cells[cell] = keep
    return cells


def one_hot(cells):
    """Digits ``(N, 16)`` (-1 blank) to one-hot ``(N, 4, 4, 4)`` float32 (blank: all zeros)."""
    cells = np.asarray(cells).reshape(-1, SIZE * SIZE)
    out = np.zeros((cells.shape[0], SIZE * SIZE, SIZE), dtype=np.float32)
    rows, cols = np.nonzero(cells >= 0)
    out[rows, cols, cells[rows, cols]] = 1.0
    return out.reshape(-1, SIZE, SIZE, SIZE)


def generate(n, rng):
    """``n`` random puzzles and their solutions.

    The target number of givens of each puzzle is uniform in [0, 15] (puzzles
    with fewer than about 4-6 givens are not uniquely solvable, so the removal
    stops earlier for those).

    Returns
    -------
    features : (n, 4, 4, 4) float32, the one-hot puzzles (blank cells all zeros).
    labels : (n, 4, 4, 4) float32, the one-hot solutions.
    """
    if n < 1:
        raise ValueError(f"generate: n must be positive, received {n}")
    boards = np.empty((n, SIZE * SIZE), dtype=np.int64)
    puzzles = np.empty((n, SIZE * SIZE), dtype=np.int64)
    targets = rng.integers(0, SIZE * SIZE, size=n)
    for i in range(n):
        board = random_board(rng)
        boards[i] = board.ravel()
        puzzles[i] = make_puzzle(board, int(targets[i]), rng)
    return one_hot(puzzles), one_hot(boards)


def constraint_matrix():
    """The true Sudoku equality constraints on the 64 one-hot variables, ``(64, 64)``.

    Variable ``16 r + 4 c + d`` is 1 when cell (r, c) holds digit d. Rows: each
    cell holds one digit (16), each row, column and box holds each digit once
    (16 each); the right-hand side is all ones. The matrix has rank 40
    (:func:`constraint_basis` keeps 40 independent rows).
    """
    rows = []

    def var(r, c, d):
        return (r * SIZE + c) * SIZE + d

    for r in range(SIZE):
        for c in range(SIZE):
            rows.append([var(r, c, d) for d in range(SIZE)])
    for d in range(SIZE):
        for i in range(SIZE):
            rows.append([var(i, c, d) for c in range(SIZE)])
            rows.append([var(r, i, d) for r in range(SIZE)])
        for br in range(0, SIZE, BOX):
            for bc in range(0, SIZE, BOX):
                rows.append([var(br + a, bc + b, d) for a in range(BOX) for b in range(BOX)])
    A = np.zeros((len(rows), SIZE ** 3))
    for i, idx in enumerate(rows):
        A[i, idx] = 1.0
    return A
