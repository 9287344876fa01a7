"""``python -m vitcop_cli``: the same as the ``vitcop`` command."""

from .app import main

if __name__ == "__main__":
    main()
