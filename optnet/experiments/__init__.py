"""The OptNet paper's experiments (Amos & Kolter, ICML 2017) as a console command.

``optnet <experiment> [options]`` (or ``python -m optnet.experiments``) runs one
experiment; see :mod:`optnet.experiments.cli`. The experiments need the extra
dependencies of ``pip install optnet[experiments]`` (tqdm, matplotlib,
scikit-learn, optax) besides torch (and jax for ``--framework jax``).
"""

EXPERIMENTS = ["sudoku", "denoise", "mnist", "demo"]
"""The registry of experiment modules, in the order ``optnet --help`` lists them."""
