"""Every framework's loss as a pure function, reusable outside the pipeline.

Each is defined next to its Distiller in `mcmikd.distill.methods.<name>` and re-exported here.
"""

from mcmikd.distill.methods.kd import kd_loss

__all__ = ["kd_loss"]
