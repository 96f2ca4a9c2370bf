"""A pretrained rl-domain encoder as a stable-baselines3 features extractor (`pip install multissl[rl]`).

    import multissl, multissl.sb3
    from multissl.collect import make_env
    from stable_baselines3 import PPO

    enc = multissl.load_encoder("runs/rl")
    PPO("MlpPolicy", make_env(**enc.domain.env_config), policy_kwargs=multissl.sb3.policy_kwargs("runs/rl"))

The env must give observations exactly as the pretraining buffer stores them; make_env with the buffer's
own settings (`encoder.domain.env_config`) does. Frozen by default: the policy learns on fixed features.
"""
import torch

from multissl.errors import UserError, require
from multissl.export import load_encoder

require("stable_baselines3", "multissl.sb3")  # missing: one line saying how to install it
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402


class EncoderExtractor(BaseFeaturesExtractor):
    """Observations [b, *obs_shape] (SB3's float copies of the stored values) -> representations [b, dim]."""

    def __init__(self, observation_space, path, trainable: bool = False):
        exported = load_encoder(path)
        super().__init__(observation_space, features_dim=exported.dim)
        self.encoder, self.domain, self.trainable = exported.encoder, exported.domain, trainable
        stored, given = list(self.domain.obs_shape), list(observation_space.shape or ())
        # SB3 wraps image envs in VecTransposeImage: stored [H W C] frames arrive as [C H W]
        self.transposed = self.domain.layout == "hwc" and given == [stored[2], stored[0], stored[1]]
        if given != stored and not self.transposed:
            fix = ("build the env with multissl.collect.make_env(**encoder.domain.env_config)"
                   if self.domain.env_config else
                   "wrap the env so its observations are what the buffer stored (it was not written by "
                   "multissl.collect, so make_env cannot rebuild it)")
            raise UserError(f"the env's observations are shaped {given}, the encoder at {path} reads {stored} "
                            f"({self.domain.layout}); {fix}")
        if not trainable:
            self.encoder.requires_grad_(False)
        self.train()  # load_encoder returns eval mode; a trainable encoder follows this module's mode

    def apply(self, fn):
        # PPO and A2C (ortho_init=True) re-initialize their features extractor with .apply(orthogonal init):
        # the pretrained encoder keeps its weights, so fn reaches only this module itself
        fn(self)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:  # frozen: dropout and batch-norm statistics stay as exported
            self.encoder.eval()
        return self

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            obs = obs.permute(0, 2, 3, 1)  # [b C H W] -> the stored [b H W C]
        x = self.domain.preprocess(obs)  # /255 and standardization as in pretraining: normalize_images=False
        if self.trainable:
            return self.encoder(x)[1]
        with torch.no_grad():
            return self.encoder(x)[1]


def policy_kwargs(path, trainable: bool = False) -> dict:
    """SB3 policy_kwargs for the encoder at `path` (a run folder or its encoder/ folder). normalize_images=False:
    the domain's preprocessing divides frames by 255 itself, SB3 would divide them first."""
    return {"features_extractor_class": EncoderExtractor,
            "features_extractor_kwargs": {"path": str(path), "trainable": trainable},
            "normalize_images": False}
