"""``python -m buquet`` — the same as the ``buquet`` command."""

from .cli import main

main()
