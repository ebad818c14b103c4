"""``python -m lensd``: the CLI. Guarded so that a spawned worker process importing it runs nothing."""

from lensd.cli import main

if __name__ == "__main__":
    main()
