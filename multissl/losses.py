"""The self-supervised losses as pure functions of tensors, for a training loop of your own. Each is the function
its objective module defines (same arguments, same paper defaults) plus a keyword-only `gather` with no default:
which batch the loss spans is a decision, not a default.

- `gather=False`: the loss of this process's rows only, with no collective at all, even inside an initialized
  process group.
- `gather=True`: the loss of the global batch (every process's rows in rank order), differentiable. Every process
  passes the same number of rows. The value returned is that loss, the same on every process.

In a DistributedDataParallel loop, call `backward()` on the `gather=True` loss as it is, with no scaling: the
gradients DDP leaves are those of one process on the whole batch. Why: process r's loss L_r has the global loss L as
its mean over the W processes (the returned value is L; its gradient is L_r's). The gather's backward sums, over
processes, the gradient each process's loss sends to a row, so on process r the parameters' gradient is W times
L's gradient through r's own rows; DDP's average over the W processes sums those shares, which is L's gradient.
Without DDP, average (do not sum) the gradients over processes after `backward()`, as DDP does. On one process
both settings give the same loss.

With `gather=False` under DDP each process has the loss of its own rows and DDP averages their gradients: for the
losses that compare samples (negatives, batch statistics, Sinkhorn, spectra) that is the loss of W smaller batches,
not of the global one.

State that objectives keep between steps (DINO's centre, NNCLR's support set, SwAV's queue, EMA teachers) is the
loop's own: fill it from the global batch (multissl.dist.all_reduce / all_gather) so that every process holds the same.

The losses (MAE's reconstruction losses are each domain's own):

- `nt_xent`: SimCLR's NT-Xent (Chen et al. 2020), with the variants of Garrido et al. 2023.
- `dcl`: decoupled contrastive loss, DCL and DCLW (Yeh et al. 2022).
- `moco_v3`: MoCo v3's InfoNCE of queries against momentum keys (Chen, Xie & He 2021).
- `nnclr`: NNCLR's InfoNCE with nearest-neighbour positives (Dwibedi et al. 2021).
- `vicreg`: VICReg (Bardes et al. 2022), with VICReg-exp and VICReg-ctr (Garrido et al. 2023).
- `barlow_twins`: Barlow Twins' cross-correlation loss (Zbontar et al. 2021).
- `byol`: BYOL's prediction of the teacher, 2 - 2 cos (Grill et al. 2020).
- `simsiam`: SimSiam's negative cosine under a stop-gradient (Chen & He 2021).
- `rdm`: predictor-free SimSiam / BYOL through spectral filters (Zhuo et al. 2023).
- `dino`: DINO's cross-entropy to the centred, sharpened teacher (Caron et al. 2021).
- `swav`: SwAV's swapped prediction of cluster codes (Caron et al. 2020).
- `sinkhorn`: SwAV's Sinkhorn-Knopp codes, balanced over the batch `gather` names (Caron et al. 2020).
- `spr`: SPR's multi-step latent prediction (Schwarzer et al. 2021).
- `masked_regression`: data2vec 2.0's and I-JEPA's regression at the masked tokens (Baevski et al. 2023,
  Assran et al. 2023).
- `scl`: the spectral contrastive loss (HaoChen et al. 2021).
- `wmse`: W-MSE's MSE between whitened views (Ermolov et al. 2021).
- `meanshift`: MeanShift's pull of the query toward its target's nearest neighbours (Koohpayegani et al. 2021).
- `lejepa`, `sigreg`: LeJEPA's prediction plus SIGReg, and SIGReg alone (Balestriero & LeCun 2025).
- `msn`: MSN's prototype matching with mean-entropy maximisation, -> (loss, terms) (Assran et al. 2022).
- `ibot_patch`: iBOT's masked-token self-distillation (Zhou et al. 2022).
- `koleo`: DINOv2's KoLeo regulariser (Sablayrolles et al. 2019, Oquab et al. 2023).
- `cpc`: CPC's InfoNCE of future latents, -> (loss, each offset's accuracy) (van den Oord et al. 2018).

A loss that returns (loss, extra) returns with gather=True the global batch's loss and its extra figures averaged
over processes (each process's figures are means over as many rows).
"""
import functools
import inspect

import torch

from multissl import dist
from multissl.errors import UserError
from multissl.objectives.barlow import barlow_loss
from multissl.objectives.byol import byol_loss
from multissl.objectives.cpc import cpc_loss
from multissl.objectives.data2vec import regression_loss
from multissl.objectives.dcl import dcl_loss
from multissl.objectives.dino import dino_loss
from multissl.objectives.ibot_losses import koleo_loss, patch_loss
from multissl.objectives.lejepa import lejepa_loss
from multissl.objectives.lejepa import sigreg as sigreg_loss
from multissl.objectives.meanshift import meanshift_loss
from multissl.objectives.moco_v3 import moco_v3_loss
from multissl.objectives.msn import msn_loss
from multissl.objectives.nnclr import nnclr_loss
from multissl.objectives.rdm import rdm_loss
from multissl.objectives.scl import scl_loss
from multissl.objectives.simclr import nt_xent_loss
from multissl.objectives.simsiam import simsiam_loss
from multissl.objectives.spr import spr_loss
from multissl.objectives.swav import sinkhorn as sinkhorn_codes
from multissl.objectives.swav import swav_loss
from multissl.objectives.vicreg import vicreg_loss
from multissl.objectives.wmse import wmse_loss

__all__ = ["nt_xent", "dcl", "moco_v3", "nnclr", "vicreg", "barlow_twins", "byol", "simsiam", "rdm", "dino", "swav",
           "sinkhorn", "spr", "masked_regression", "scl", "wmse", "meanshift", "lejepa", "sigreg", "msn", "ibot_patch",
           "koleo", "cpc"]

GATHER_DOC = ("gather (keyword, required): False, the loss of this process's rows with no collective; True, the loss "
              "of the global batch, the same value on every process (see multissl.losses for its use under DDP).")


def _global_value(loss):
    """The mean over processes of their losses as the value (the global batch's loss: every process holds as many
    rows), with this process's loss's gradient. (loss, extra): extra's tensors (in a dict or not) averaged too."""
    if dist.world_size() == 1:
        return loss
    if isinstance(loss, tuple):
        first, extra = loss
        mean = lambda t: dist.all_reduce(t.detach(), "mean") if isinstance(t, torch.Tensor) else t
        return _global_value(first), ({k: mean(v) for k, v in extra.items()} if isinstance(extra, dict)
                                      else mean(extra))
    return dist.all_reduce(loss, "mean") + (loss - loss.detach())


def _signature(fn) -> inspect.Signature:
    """fn's signature with a keyword-only `gather` (no default) before any **kwargs."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    gather = inspect.Parameter("gather", inspect.Parameter.KEYWORD_ONLY, annotation=bool)
    return sig.replace(parameters=[*params[:at], gather, *params[at:]])


def _public(fn, name: str, paper: str, global_batch=None):
    """fn under `name` with its required `gather`. gather=True runs `global_batch` when given (a function of fn's
    arguments that already returns the global value), else fn with its value averaged over processes."""
    @functools.wraps(fn)
    def public(*args, gather: bool, **kwargs):
        if not isinstance(gather, bool):
            raise UserError(f"multissl.losses.{name}: gather must be True (the global batch's loss) or False (this "
                            f"process's rows only), got {gather!r}")
        if not gather:
            with dist.one_process():
                return fn(*args, **kwargs)
        return global_batch(*args, **kwargs) if global_batch else _global_value(fn(*args, **kwargs))

    public.__name__ = public.__qualname__ = name
    public.__module__ = __name__
    public.__doc__ = f"{paper}\n\n{inspect.cleandoc(fn.__doc__ or '')}\n\n{GATHER_DOC}"
    public.__signature__ = _signature(fn)
    return public


def _spr_global(p: torch.Tensor, z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """spr_loss over every process's valid steps: processes hold different counts of them, so the mean of their
    means would weigh them wrongly; the inputs are gathered instead, as the SPR objective does."""
    return spr_loss(dist.gather(p), dist.all_gather(z), dist.gather(valid.to(p.dtype)) > 0)


def _koleo_global(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """koleo_loss over every process's rows: each row's nearest neighbour is sought in the global batch."""
    return koleo_loss(dist.gather(x), *args, **kwargs)


nt_xent = _public(nt_xent_loss, "nt_xent", "SimCLR's NT-Xent (Chen et al. 2020).")
dcl = _public(dcl_loss, "dcl", "Decoupled contrastive loss, DCL and DCLW (Yeh et al. 2022).")
moco_v3 = _public(moco_v3_loss, "moco_v3", "MoCo v3's InfoNCE against momentum keys (Chen et al. 2021).")
nnclr = _public(nnclr_loss, "nnclr", "NNCLR's nearest-neighbour InfoNCE (Dwibedi et al. 2021).")
vicreg = _public(vicreg_loss, "vicreg", "VICReg (Bardes et al. 2022).")
barlow_twins = _public(barlow_loss, "barlow_twins", "Barlow Twins (Zbontar et al. 2021).")
byol = _public(byol_loss, "byol", "BYOL's regression of the teacher (Grill et al. 2020).")
simsiam = _public(simsiam_loss, "simsiam", "SimSiam's negative cosine (Chen & He 2021).")
rdm = _public(rdm_loss, "rdm", "Predictor-free SimSiam / BYOL by spectral filters (Zhuo et al. 2023).")
dino = _public(dino_loss, "dino", "DINO's self-distillation cross-entropy (Caron et al. 2021).")
swav = _public(swav_loss, "swav", "SwAV's swapped prediction (Caron et al. 2020).")
sinkhorn = _public(sinkhorn_codes, "sinkhorn", "SwAV's Sinkhorn-Knopp codes (Caron et al. 2020): a function of "
                   "scores, not a loss; gather=True balances the codes over the global batch.",
                   global_batch=sinkhorn_codes)
spr = _public(spr_loss, "spr", "SPR's multi-step latent prediction (Schwarzer et al. 2021).",
              global_batch=_spr_global)
masked_regression = _public(regression_loss, "masked_regression",
                            "data2vec 2.0's and I-JEPA's regression at the masked tokens (Baevski et al. 2023, "
                            "Assran et al. 2023).")
scl = _public(scl_loss, "scl", "The spectral contrastive loss (HaoChen et al. 2021).")
wmse = _public(wmse_loss, "wmse", "W-MSE: MSE between whitened views (Ermolov et al. 2021).")
meanshift = _public(meanshift_loss, "meanshift", "MeanShift's nearest-neighbour pull (Koohpayegani et al. 2021).")
lejepa = _public(lejepa_loss, "lejepa", "LeJEPA's prediction across views plus SIGReg (Balestriero & LeCun 2025).")
sigreg = _public(sigreg_loss, "sigreg", "LeJEPA's SIGReg: sketched Epps-Pulley tests toward an isotropic Gaussian "
                 "(Balestriero & LeCun 2025).")
msn = _public(msn_loss, "msn", "MSN's masked prototype matching (Assran et al. 2022).")
ibot_patch = _public(patch_loss, "ibot_patch", "iBOT's masked-token self-distillation (Zhou et al. 2022).")
koleo = _public(koleo_loss, "koleo", "The KoLeo regulariser of DINOv2 (Sablayrolles et al. 2019, Oquab et al. 2023).",
                global_batch=_koleo_global)
cpc = _public(cpc_loss, "cpc", "CPC's InfoNCE of future latents (van den Oord et al. 2018).")
