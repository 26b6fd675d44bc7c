"""Docstrings as command-line help: the same text without reStructuredText markup."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|data|meth|mod|attr):`~?([^`]+)`")


def plain(doc: str) -> str:
    """``x`` -> x and :func:`a.b` -> a.b, so ``--help`` shows what a terminal user types."""
    return _ROLE.sub(r"\1", doc).replace("``", "")
