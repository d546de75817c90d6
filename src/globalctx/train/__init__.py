"""Training: data (Fashion-MNIST, ImageFolder), the loop, checkpoints, evaluation, torchrun DDP.
The commands are in :mod:`globalctx.cli` (``train``, ``eval``).

Heavy optional imports (safetensors, tqdm, tensorboard, matplotlib) happen inside the functions
that need them.
"""

from .config import TrainConfig

__all__ = ["TrainConfig"]
