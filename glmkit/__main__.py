"""``python -m glmkit`` is the same as the ``glmkit`` command."""

from glmkit.cli import entry

if __name__ == "__main__":  # pragma: no cover
    entry()
