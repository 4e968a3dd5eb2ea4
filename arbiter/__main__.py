"""``python -m arbiter``: the same command line as the ``arbiter`` script."""

from arbiter.cli import main

if __name__ == "__main__":
    main(prog_name="arbiter")
