"""Training: data (Fashion-MNIST, ImageFolder), the loop, checkpoints, torchrun DDP, and ``compare``.

Heavy optional imports (safetensors, tqdm, tensorboard, matplotlib) happen inside the functions
that need them.
"""

from .config import TrainConfig

__all__ = ["TrainConfig"]
