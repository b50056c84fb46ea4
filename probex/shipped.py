"""Where the data that ships with probex lies: the class-name tables and the demo jungle.

In the repository the data sits in the top-level ``assets/`` folder. A wheel (``pip install .``,
``pip wheel .``) carries the same folder as package data, installed as ``probex/assets/``
beside this module (``pyproject.toml`` maps one onto the other). :func:`assets_dir` finds
whichever is there, so a plain install and a checkout read the same files.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def assets_dir() -> Path:
    """The folder of the shipped data: ``probex/assets`` in an installed wheel, else the checkout's ``assets/``."""
    installed = _HERE / "assets"
    if installed.is_dir():
        return installed
    return _HERE.parent / "assets"
