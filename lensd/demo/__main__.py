"""``python -m lensd.demo``: the demo (``make demo``), or one of its client processes."""

from lensd.demo.run import main

if __name__ == "__main__":
    main()
