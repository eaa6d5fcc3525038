"""``python -m trunkline``: the same command as ``trunkline``."""

from trunkline.cli import main

if __name__ == "__main__":
    main(prog_name="trunkline")
