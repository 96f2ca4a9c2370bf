"""CPC (van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding"; Hénaff et al. 2020,
CPC v2, for images): the encoder maps each step of the data's order to a latent z_t; an autoregressive context
network, a GRU as in CPC, summarises z_1..z_t into c_t; for each offset k = 1..K a linear map W_k c_t scores the
latent k steps ahead with the paper's log-bilinear score z^T W_k c_t against negatives from the batch (InfoNCE).

Steps. On a domain with an order (`Ordered`: rows of patches of an image, time columns of a spectrogram, time of a
video, the tokens of a text) each step's tokens are encoded alone — keep= holds that step's tokens only — and z_t is
the encoder's pooled output of them: a latent then holds nothing of the steps it is asked to predict, as CPC's
encoders see one patch (v2) or a few tens of milliseconds (audio). Encoded with attention over the whole view, every
latent could read the future and the task would need no prediction. Which tokens make a step is read off the domain's
own `steps` (the steps of one-hot tokens). On a domain of episodes (`Episodes`, rl) the steps are the sample's own
step and the next K steps of its episode, each observation encoded whole (its pooled representation); steps past the
episode's end are never contexts or targets.

Negatives: the latents at the target's step of every other sample of the global batch. The papers also draw from
the same sample's other steps; here a latent carries its position (the embedder adds it), so those could be told
apart by position alone and would teach nothing about content."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.contracts import Episodes, Ordered, has
from multissl.dist import gather
from multissl.encoder import encode_views
from multissl.errors import UserError


def cpc_loss(pred: torch.Tensor, z: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pred [b T K d]: pred[:, t, k-1] = W_k c_t, the prediction of z[:, t+k]; z [b T d]; valid [b T] (False: padding,
    or past the episode's end), on each process. Over the global batch, for each offset k: every prediction whose
    context step t and target step t+k are valid scores z[j, t+k] of every sample j valid there; cross-entropy with
    its own sample as the positive. -> (loss: the mean over offsets of each offset's mean cross-entropy, offsets
    without a scored pair left out; acc [K]: each offset's top-1 accuracy, 0 without a scored pair)."""
    pred, z = gather(pred), gather(z)
    valid = gather(valid.to(z.dtype)) > 0  # [n T]
    n, steps, k_max = pred.shape[:3]
    own = torch.arange(n, device=z.device)
    losses, acc = [], torch.zeros(k_max, device=z.device)
    for k in range(1, min(k_max, steps - 1) + 1):
        # [T-k n n]: sample i's prediction from step t against sample j's latent at step t+k
        logits = torch.einsum("itd,jtd->tij", pred[:, :steps - k, k - 1], z[:, k:])
        logits = logits.masked_fill(~valid[:, k:].T[:, None, :], float("-inf"))  # padded targets are no candidates
        rows = (valid[:, :steps - k] & valid[:, k:]).T  # [T-k n]: real context and real target
        if not rows.any():
            continue
        scored, target = logits[rows], own.expand(steps - k, n)[rows]  # [m n], [m]
        losses.append(F.cross_entropy(scored, target))
        acc[k - 1] = (scored.argmax(1) == target).float().mean().detach()
    loss = torch.stack(losses).mean() if losses else pred.sum() * 0
    return loss, acc


class CPC(nn.Module):
    global_views = 1  # the prediction runs along one view's own order; a second view adds nothing to it
    batch_statistics = True  # negatives come from the batch
    needs = ((Ordered, Episodes),)  # an order of tokens, or the next steps of episodes
    needs_token_encoder = True  # each step is encoded alone through keep=
    collapse_hint = "lower objective.steps (near steps are the easier targets) or widen objective.context"

    def __init__(self, encoder, domain, steps: int = 3, context: int = 128):
        super().__init__()
        self.k, self.episodes = int(steps), has(domain, Episodes)
        if self.k < 1:
            raise UserError(f"objective.steps={steps} must be at least 1 (the offsets predicted: 1 .. steps)")
        if self.episodes:
            self.future_steps, self.n_steps = self.k, self.k + 1  # the loader brings the next K steps' views
        else:
            self.domain = domain  # a plain attribute: its `steps` and token count
            self.n_steps = domain.steps(torch.zeros(1, domain.num_tokens, 1), None)[0].shape[1]  # the longest order
            if self.k >= self.n_steps:
                raise UserError(f"objective.steps={self.k} reaches past the last of domain={domain.name}'s "
                                f"{self.n_steps} steps; use objective.steps={max(1, self.n_steps - 1)} at most")
        self.gru = nn.GRU(encoder.dim, context, batch_first=True)
        self.predictors = nn.Linear(context, self.k * encoder.dim, bias=False)  # W_1 .. W_K side by side

    def encode_steps(self, encoder, x, pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """View 0 x [b ...] (pad [b n]) -> (z [b T d]: the encoder's pooled output of each step's tokens alone, valid
        [b T]), T the domain's step count at full length: a shorter text batch is padded to it, so every process
        gathers one shape. The view is repeated once per step; a step of padding alone is encoded as if real (it is
        never scored) so that attention always has a key."""
        b, dev = x.shape[0], x.device
        n = self.domain.num_tokens if pad is None else pad.shape[1]
        member = self.domain.steps(torch.eye(n, device=dev)[None], None)[0][0] > 0  # [T n]: the tokens of step t
        steps, count = member.shape[0], member.sum(1, keepdim=True)
        keep = torch.argsort((~member).to(torch.uint8), dim=1, stable=True)[:, :int(count.max())]  # its tokens first
        keep = keep.masked_fill(torch.arange(keep.shape[1], device=dev) >= count, -1).repeat(b, 1)  # [b*T k]
        rows_pad = None
        if pad is not None or (keep < 0).any():
            rows_pad = (pad if pad is not None else torch.zeros(b, n, dtype=torch.bool, device=dev))
            rows_pad = rows_pad.repeat_interleave(steps, 0)  # [b*T n]
            empty = (torch.gather(rows_pad, 1, keep.clamp_min(0)) | (keep < 0)).all(1, keepdim=True)
            rows_pad = rows_pad & ~empty
        xs = x.repeat_interleave(steps, 0)
        pooled = (encoder(xs, keep) if rows_pad is None else encoder(xs, keep, pad=rows_pad))[1]  # [b*T d]
        z = pooled.view(b, steps, -1)
        step_pad = self.domain.steps(torch.zeros(b, n, 1, device=dev), pad)[1]
        valid = torch.ones(b, steps, dtype=torch.bool, device=dev) if step_pad is None else ~step_pad
        if steps < self.n_steps:
            z = torch.cat([z, z.new_zeros(b, self.n_steps - steps, z.shape[-1])], 1)
            valid = torch.cat([valid, valid.new_zeros(b, self.n_steps - steps)], 1)
        return z, valid

    def predict(self, z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """z [b T d] -> pred [b T K d]: W_k c_t, c_t the GRU's state after z_1..z_t. Padded steps enter as zeros, so a
        sample's contexts never depend on what it is batched with; the GRU runs in its own precision (autocast leaves
        recurrent layers to their inputs' dtype)."""
        zs = z * valid.unsqueeze(-1).to(z.dtype)
        with torch.autocast(z.device.type, enabled=False):
            c, _ = self.gru(zs.to(self.gru.weight_ih_l0.dtype))  # [b T context]
        return self.predictors(c).view(*c.shape[:2], self.k, -1)

    def forward(self, encoder, batch, sched):
        if self.episodes:  # views: step t, then steps t+1 .. t+K of its episode (the last one repeated past the end)
            z = torch.stack(encode_views(encoder, batch["views"][:self.n_steps]), 1)  # [b K+1 d]
            later = batch["valid"].bool()  # [b K]
            valid = torch.cat([torch.ones_like(later[:, :1]), later], 1)
            rep = z[:, 0]
        else:
            x, pad = batch["views"][0], batch["pad"][0] if "pad" in batch else None
            z, valid = self.encode_steps(encoder, x, pad)
            with torch.no_grad():  # the representation evaluation reads: the whole view at once
                rep = (encoder(x) if pad is None else encoder(x, pad=pad))[1]
        loss, acc = cpc_loss(self.predict(z, valid), z, valid)
        return loss, {"rep": rep.detach(), **{f"acc_{k + 1}": a for k, a in enumerate(acc)}}
