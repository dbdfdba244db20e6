"""Every framework's loss as a pure function, reusable outside the pipeline.

Each is defined next to its Distiller in `mcmikd.distill.methods.<name>` and re-exported here.
"""

from mcmikd.distill.methods.ab import ab_loss
from mcmikd.distill.methods.at import at_loss
from mcmikd.distill.methods.cc import cc_loss
from mcmikd.distill.methods.crd import contrast_scores, crd_loss, nce_loss, sample_other_class
from mcmikd.distill.methods.dist import dist_loss
from mcmikd.distill.methods.dkd import dkd_loss
from mcmikd.distill.methods.fitnet import fitnet_loss
from mcmikd.distill.methods.fsp import fsp_loss, fsp_matrix
from mcmikd.distill.methods.ft import ft_loss, paraphraser_reconstruction_loss
from mcmikd.distill.methods.hsakd import hsakd_loss
from mcmikd.distill.methods.kd import kd_loss
from mcmikd.distill.methods.nst import nst_loss
from mcmikd.distill.methods.pkt import pkt_loss
from mcmikd.distill.methods.reviewkd import hcl_loss
from mcmikd.distill.methods.rkd import rkd_loss
from mcmikd.distill.methods.sp import sp_loss
from mcmikd.distill.methods.vid import vid_loss

__all__ = [
    "ab_loss", "at_loss", "cc_loss", "contrast_scores", "crd_loss", "dist_loss", "dkd_loss", "fitnet_loss",
    "fsp_loss", "fsp_matrix", "ft_loss", "hcl_loss", "hsakd_loss", "kd_loss", "nce_loss", "nst_loss",
    "paraphraser_reconstruction_loss", "pkt_loss", "rkd_loss", "sample_other_class", "sp_loss", "vid_loss",
]
