"""What each command needs beyond torch and numpy, checked before it does any work.

A missing package ends the command at once with one line naming the extra that installs it
(``globalctx train: error: training needs safetensors, which is not installed: pip install
'globalctx[train]'``), instead of a traceback after an epoch and a run directory left behind.
Packages a command can do without are not required: without ``tqdm`` the progress is plain
lines, without ``tensorboard`` there are no event files (both said in the run's log).
"""

from __future__ import annotations

from ..extras import require
from ..train.data import parse_data_spec

__all__ = ["require_for_run"]


def require_for_run(feature: str, *, data: str | None = None, checkpoints: bool = True, plots: bool = False) -> None:
    """Check the ``train`` extra's modules that ``feature`` cannot run without.

    Args:
        feature: what needs them, for the message (``"training"``).
        data: a ``--data`` spec; ``imagefolder:...`` needs pillow.
        checkpoints: the command reads or writes ``.safetensors`` files.
        plots: the command draws figures (matplotlib).

    Raises:
        globalctx.extras.MissingExtraError: naming every missing module and
            ``pip install 'globalctx[train]'``.
    """
    modules = ["safetensors"] if checkpoints else []
    if plots:
        modules.append("matplotlib")
    if data is not None and parse_data_spec(data).kind == "imagefolder":
        modules.append("PIL")
    if modules:
        require("train", *modules, feature=feature)
