"""Allow ``python -m cover`` (and ``torchrun -m cover``)."""

from cover.cli.console import main

if __name__ == "__main__":
    main()
