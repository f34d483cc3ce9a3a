"""``python -m optnet.experiments``: the same as the ``optnet`` console command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
