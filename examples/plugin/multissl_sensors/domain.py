"""Sensor domain: multichannel time series windows [c t] (accelerometers, IMUs) -> per-channel standardised windows
-> one token per patch of `patch` steps of every channel. Views (Um et al. 2017's wearable-sensor augmentations):
time warp, per-channel scaling and jitter. Masking: contiguous spans of patches."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.data import sample_views
from multissl.domains.masking import split_indices
from multissl.domains.patches import PatchEmbed, masked_mse, patchify
from multissl.errors import UserError

from .data import ACTIVITIES, default_splits, file_splits


def warp_positions(speed: torch.Tensor, steps: int) -> torch.Tensor:
    """speed [m k] at k knots spread over the window -> where each of `steps` outputs reads the input [m steps]: the
    whole window, played at a speed that varies smoothly (linearly between knots); equal speeds read it as it is."""
    rate = F.interpolate(speed[:, None], size=steps, mode="linear", align_corners=True)[:, 0]  # [m t]
    pos = rate.cumsum(1) - rate[:, :1]
    return pos * (steps - 1) / pos[:, -1:]


def resample(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x [m c t] read at positions pos [m t] in [0, t - 1], linearly between steps."""
    lo = pos.floor().clamp(max=x.shape[-1] - 2)
    idx = lo.long()[:, None].expand(-1, x.shape[1], -1)  # [m c t]
    return torch.lerp(x.gather(2, idx), x.gather(2, idx + 1), (pos - lo)[:, None])


def span_mask(batch_size: int, n: int, ratio: float, span: int, rng: torch.Generator):
    """round(ratio n) of n tokens masked (at least one kept) in spans of `span` tokens (the last one shorter when they
    do not divide), at random places that never overlap: a masked patch cannot be read off its masked neighbours.
    -> (keep [b k], masked [b m]), each sorted."""
    m = min(max(round(ratio * n), 1), n - 1)
    lengths = torch.tensor([span] * (m // span) + ([m % span] if m % span else []))  # [s]
    slots = n - m + len(lengths)  # one slot per kept token and per span, in a random order
    is_span = torch.rand(batch_size, slots, generator=rng).argsort(1) < len(lengths)  # [b slots]
    width = torch.where(is_span, lengths[(is_span.cumsum(1) - 1).clamp_min(0)], 1)  # tokens each slot covers
    slot = torch.searchsorted(width.cumsum(1), torch.arange(n).expand(batch_size, n).contiguous(), right=True)
    return split_indices(is_span.gather(1, slot).float(), n - m)  # [b n]: 1 = masked, sorts last


class SensorDomain:
    name = "sensors"

    def __init__(self, patch: int = 8, jitter: float = 0.05, scale: float = 0.1, warp: float = 0.2, knots: int = 4,
                 mask_ratio: float = 0.5, mask_span: int = 2, norm_pix_loss: bool = True, pos_embed: str = "learned",
                 test_fraction: float = 0.2, data=None, state: dict | None = None):
        if patch < 1 or mask_span < 1 or knots < 2 or not 0 < mask_ratio < 1:
            raise UserError(f"domain.patch={patch} and domain.mask_span={mask_span} must be at least 1, domain.knots="
                            f"{knots} at least 2 and domain.mask_ratio={mask_ratio} between 0 and 1")
        if not 0 <= test_fraction < 1:
            raise UserError(f"domain.test_fraction={test_fraction} must be in [0, 1) (0: no held-out split)")
        self.patch, self.jitter, self.scale, self.warp, self.knots = patch, jitter, scale, warp, knots
        self.mask_ratio, self.mask_span, self.norm_pix_loss = mask_ratio, mask_span, norm_pix_loss
        self.pos_embed, self.test_fraction, self.data = pos_embed, test_fraction, data or {}
        self.channels = self.steps = self.mean = self.std = None
        self.num_classes, self._splits = None, None
        if state:
            self.channels, self.steps = state["channels"], state["steps"]
            self.mean, self.std = state["mean"], state["std"]

    # ---- data -------------------------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            path = self.data.get("path")
            self._splits, self.num_classes = ((default_splits(), len(ACTIVITIES)) if not path
                                              else file_splits(path, self.test_fraction))
            train = self._splits["train"]
            if self.mean is None:  # a domain built with a state derives nothing again
                self._fit(train)
            elif tuple(train[0]["x"].shape) != (self.channels, self.steps):
                raise UserError(f"data.path holds windows of shape {tuple(train[0]['x'].shape)}; this domain's state "
                                f"is for [{self.channels}, {self.steps}] (channels, steps): give windows of that shape")
        return self._splits.get(split)

    def _fit(self, train):
        """The window shape and per-channel mean and std of (up to 1024) training windows."""
        idx = torch.linspace(0, len(train) - 1, min(len(train), 1024)).long().tolist()
        x = torch.stack([train[i]["x"] for i in idx]).double()  # [n c t]
        self.channels, self.steps = x.shape[1], x.shape[2]
        if self.steps < self.patch or self.steps % self.patch:
            raise UserError(f"windows of {self.steps} steps are not a multiple of domain.patch={self.patch}; pick a "
                            f"patch that divides {self.steps}")
        self.mean, self.std = x.mean((0, 2)).tolist(), x.std((0, 2)).clamp_min(1e-6).tolist()

    def state(self) -> dict:
        return {"channels": self.channels, "steps": self.steps, "mean": self.mean, "std": self.std}

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """[.. c t] in the sensor's units -> each channel standardised by the training statistics."""
        mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device)[:, None] for v in (self.mean, self.std))
        return (x - mean) / std

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardize(x.float())

    def preprocess(self, raw) -> torch.Tensor:
        """Windows [b c t] (or one [c t]; a tensor or an array, in the units the training data had) -> model input."""
        x = torch.as_tensor(raw).float()
        x = x[None] if x.ndim == 2 else x
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.channels, self.steps):
            raise UserError(f"sensor windows must be [batch, {self.channels}, {self.steps}] (channels, steps) as in "
                            f"training, got shape {tuple(x.shape)}; cut or resample them to that shape")
        return self.standardize(x)

    # ---- views ------------------------------------------------------------------------------------------------
    def views(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2) -> list[torch.Tensor]:
        return sample_views(self, self.draw(x, rng, n_global))

    def draw(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2) -> dict:
        """x [c t] -> the window and, per view, the speeds of its time warp at the knots, its channels' gains and
        its jitter."""
        v, (c, t), f32 = n_global, x.shape, torch.float32  # float32 whatever the default dtype, as the window
        speed = (1 + self.warp * torch.randn(v, self.knots, generator=rng, dtype=f32)).clamp_min(0.1)  # not backwards
        gain = 1 + self.scale * torch.randn(v, c, generator=rng, dtype=f32)
        noise = self.jitter * torch.randn(v, c, t, generator=rng, dtype=f32)
        return {"x": x.float(), "speed": speed, "gain": gain, "noise": noise}

    def apply(self, d: dict) -> list[torch.Tensor]:
        """draw's tensors for a batch [b v ...] -> the views [b c t]: the standardised window time-warped, each
        channel scaled, then jittered."""
        b, v, c, t = d["noise"].shape
        x = self.standardize(d["x"])[:, None].expand(b, v, c, t).reshape(b * v, c, t)
        x = resample(x, warp_positions(d["speed"].reshape(b * v, -1), t)).view(b, v, c, t)
        return list((x * d["gain"][..., None] + d["noise"]).unbind(1))

    # ---- tokens and masked modelling --------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.steps // self.patch

    @property
    def target_dim(self) -> int:
        return self.patch * self.channels

    def embedder(self, dim: int) -> nn.Module:
        """[b c t] -> [b n dim]: a Conv1d with kernel = stride = patch, positions added."""
        return PatchEmbed(self.channels, (self.steps,), (self.patch,), dim, self.pos_embed)

    def mask(self, batch_size: int, rng: torch.Generator):
        return span_mask(batch_size, self.num_tokens, self.mask_ratio, self.mask_span, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """[b c t] -> its patches [b n (patch c)] in the embedder's token order, each standardised (norm_pix_loss)."""
        return patchify(x, (self.patch,), self.norm_pix_loss)

    def reconstruction_loss(self, pred, target, masked):
        return masked_mse(pred, target, masked)
