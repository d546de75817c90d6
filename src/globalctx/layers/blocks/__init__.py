"""One module per registered block: the preset, its equation and the parts only it uses.

Importing this package registers every block.
"""

from . import ban, dia, dnl, eca, enc, fca, gc, gct, gsop, nl, rcan, se, snl, soca, srm  # noqa: F401

__all__: list[str] = []
