"""``python -m workers ...`` is the ``estuary`` command."""

from workers.cli import main

if __name__ == "__main__":
    main()
