"""encoder=timm: any timm backbone, random or from a local checkpoint (a weights file, or a folder timm wrote with
`save_pretrained`/`push_to_hf_hub`: config.json + weights), to continue pretraining on the user's images. Nothing is
fetched: the weights are read here (safetensors, or torch.load with weights_only) and handed to timm, which adapts
them to the run (classifier dropped, first conv summed to one channel for gray images, ViT positions resampled to
the domain's image size).

The domain normalises images with its own statistics; a pretrained backbone expects its own (ImageNet's, usually).
The encoder undoes one and applies the other as a per-channel affine map in its first op, `(x * std_d + mean_d -
mean_m) / std_m`, kept as buffers, so training, `embed` and the ONNX graph all feed the backbone what it was
trained on. The domain's image size is kept (a ViT is built at it); the line the encoder prints says when that
differs from the size the weights were trained at."""
import json
import sys
from pathlib import Path

import torch
from torch import nn

from multissl.encoder import fill_masked, gather_tokens
from multissl.errors import UserError, reason, require
from multissl.finetune import renormalise, set_trainable

WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")


def read_weights(file: Path) -> dict:
    """A state dict from a file, as data: safetensors, or a pickle torch opens with weights_only (no code runs)."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(file))
        else:
            sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read encoder.checkpoint={file}: {reason(e, 120)}; give a .safetensors file or a "
                        f"state_dict saved with torch.save") from None
    for key in ("model", "state_dict", "model_state"):  # training checkpoints wrap the weights
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"encoder.checkpoint={file} holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def locate(checkpoint: str, name: str | None) -> tuple[str, dict, dict, dict]:
    """(architecture, its model_args, pretrained_cfg fields (mean, std, input_size), state dict) of a checkpoint."""
    p = Path(checkpoint).expanduser()
    if not p.exists():
        raise UserError(f"encoder.checkpoint={checkpoint} does not exist; give a local weights file or a folder "
                        f"timm saved (nothing is downloaded)")
    args, cfg = {}, {}
    if p.is_dir():
        if (p / "config.json").is_file():  # timm's own folder format
            meta = json.loads((p / "config.json").read_text(encoding="utf-8"))
            found = meta.get("architecture")
            if name and found and name != found:
                raise UserError(f"encoder.checkpoint={checkpoint} holds a {found}, not encoder.name={name}; drop "
                                f"encoder.name (the folder names its model)")
            name, args, cfg = name or found, meta.get("model_args") or {}, meta.get("pretrained_cfg") or {}
        files = [p / f for f in WEIGHTS if (p / f).is_file()]
        if not files:
            raise UserError(f"encoder.checkpoint={checkpoint} has none of {', '.join(WEIGHTS)}")
        p = files[0]
    if not name:
        raise UserError(f"encoder.checkpoint={checkpoint} does not say which model it is; set encoder.name=<its timm "
                        f"architecture> (e.g. vit_small_patch16_224, resnet50)")
    return name, args, {k: cfg[k] for k in ("mean", "std", "input_size") if k in cfg}, read_weights(p)


def is_vit(model) -> bool:
    from timm.models.vision_transformer import VisionTransformer
    return isinstance(model, VisionTransformer)


class TimmEncoder(nn.Module):
    """A timm model without its classifier: (tokens [b n d] for ViTs, else None; its pooled features [b d])."""
    supports_masking = True  # ViTs (timm's VisionTransformer: DeiT, DINOv2, ...); others refuse tokens in one line
    supports_mask_tokens = True
    domains = ("image",)

    def __init__(self, domain, name: str | None = None, checkpoint: str | None = None, model_args: dict | None = None,
                 freeze=None, lr_scale: float = 1.0, layer_decay: float | None = None):
        super().__init__()
        timm = require("timm", "encoder=timm")
        args, cfg, sd = dict(model_args or {}), {}, None
        if checkpoint:
            name, found, cfg, sd = locate(checkpoint, name)
            args = {**found, **args}
        if not name:
            raise UserError("encoder=timm needs encoder.name=<a timm model> (e.g. resnet18, vit_small_patch16_224; "
                            "timm.list_models() lists them)")
        self.name, self.args = name, {k: v for k, v in args.items() if k not in ("in_chans", "num_classes")}
        self.model = build(timm, name, args, domain, sd, cfg)
        self.dim = self.model.num_features
        c = domain.channels
        # identity for a model trained here; the map from the domain's statistics to the weights' otherwise
        mean_d, std_d = domain.mean or [0.0] * c, domain.std or [1.0] * c
        mean_m = cfg.get("mean") or self.model.pretrained_cfg.get("mean", (0.5,)) if sd is not None else mean_d
        std_m = cfg.get("std") or self.model.pretrained_cfg.get("std", (0.5,)) if sd is not None else std_d
        scale, shift = renormalise(mean_d, std_d, mean_m, std_m, c, 4)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)
        vit = is_vit(self.model)
        patch = self.model.patch_embed.patch_size[0] if vit else None
        self.token_fix = (None if not vit else f"set domain.patch_size={patch}, the backbone's patch" if
                          getattr(domain, "patch", None) != patch else None)
        self.vit = vit
        groups = timm.models.group_parameters(self.model, self.model.group_matcher(coarse=False), reverse=True)
        set_trainable(self.model, lambda n: groups.get(n, max(groups.values())), freeze, lr_scale, layer_decay)
        if sd is not None:
            size = (cfg.get("input_size") or self.model.pretrained_cfg.get("input_size") or (0, 0, 0))[-1]
            fed = "" if size in (0, domain.image_size) else (f"; trained at {size} px, fed domain.image_size="
                                                             f"{domain.image_size} (set it to {size} for its own size)")
            print(f"multissl: encoder=timm {name} from {checkpoint}: images re-normalised from the domain's "
                  f"statistics to the weights' mean {[round(float(v), 3) for v in mean_m]}, std "
                  f"{[round(float(v), 3) for v in std_m]}{fed}", file=sys.stderr)

    def exported_config(self, cfg: dict) -> dict:
        """What the export records: the resolved architecture and arguments, no checkpoint (the export holds the
        weights, the normalisation buffers included), so it loads where the checkpoint is not."""
        return {**cfg, "name": self.name, "model_args": self.args, "checkpoint": None, "freeze": None}

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.model.modules():  # BatchNorm statistics of frozen layers stay as the weights have them
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                m.eval()
        return self

    def forward(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None,
                masked: torch.Tensor | None = None, mask_token: torch.Tensor | None = None):
        """x [b c h w] normalised by the domain; keep [b k] visible patches, masked [b m] patches entering as
        mask_token [d] (ViTs) -> (tokens [b k d] or None, pooled [b d])."""
        if pad is not None:
            raise UserError("encoder=timm reads fixed-size images, not padded sequences")
        m = self.model
        if keep is None and masked is None:
            f = m.forward_features(x * self.scale + self.shift)  # ViT [b p+n d]; CNN [b d h w]
            return (f[:, m.num_prefix_tokens:] if self.vit else None), m.forward_head(f, pre_logits=True)
        t = self.block_input(x, keep, masked, mask_token)  # [b p+k d]
        t = m.norm(m.blocks(t))
        return t[:, m.num_prefix_tokens:], m.forward_head(t, pre_logits=True)

    def block_input(self, x, keep=None, masked=None, mask_token=None):
        """What the first block sees [b p+k d]: the prefix (cls, registers), then the kept patches with positions."""
        if not self.vit or self.token_fix:
            fix = self.token_fix or "it is not a ViT; use a ViT (encoder.name=vit_...) or an objective without masking"
            raise UserError(f"encoder=timm {self.name} gives no patch tokens: {fix}")
        m, p = self.model, self.model.num_prefix_tokens
        embed = lambda v: m._pos_embed(m.patch_embed(v * self.scale + self.shift))  # noqa: E731  [b p+n d]
        full = embed(x)
        t = full[:, p:]
        if masked is not None:
            t = fill_masked(lambda v: embed(v)[:, p:], x, t, masked, mask_token)
        if keep is not None:
            t = gather_tokens(t, keep)  # [b k d]
        return m.norm_pre(m.patch_drop(torch.cat([full[:, :p], t], 1)))

    def hidden_states(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None) -> list:
        """Every block's output patch tokens [b k d], before the final norm (data2vec's targets)."""
        t, out = self.block_input(x, keep), []
        for block in self.model.blocks:
            t = block(t)
            out.append(t[:, self.model.num_prefix_tokens:])
        return out


def build(timm, name, args, domain, sd, cfg) -> nn.Module:
    """timm.create_model without a classifier, at the domain's channels (and image size for models that take one);
    then the state dict `sd`, adapted as timm adapts its own weights (the model's checkpoint filter resamples
    positions, the first conv is summed or tiled to the channels, the classifier dropped) and loaded strictly: a
    checkpoint of another architecture is an error, not random layers."""
    kw = {k: v for k, v in args.items() if k not in ("img_size", "in_chans", "num_classes")}
    kw |= dict(num_classes=0, in_chans=domain.channels)
    try:
        try:
            model = timm.create_model(name, pretrained=False, img_size=domain.image_size, **kw)
        except TypeError:  # a conv net takes any size
            model = timm.create_model(name, pretrained=False, **kw)
    except RuntimeError as e:
        raise UserError(f"cannot build timm model {name}: {reason(e, 160)}") from None
    if is_vit(model) and domain.image_size % model.patch_embed.patch_size[0]:
        raise UserError(f"domain.image_size={domain.image_size} is not a multiple of {name}'s patch "
                        f"{model.patch_embed.patch_size[0]}; set domain.image_size to one")
    if sd is not None:
        load_adapted(timm, model, name, sd)
    return model


def load_adapted(timm, model, name, sd):
    pc = model.pretrained_cfg
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    try:
        sd = filter_fn(dict(sd), model) if filter_fn else dict(sd)
        convs, own = pc.get("first_conv") or (), model.state_dict()
        for conv in (convs,) if isinstance(convs, str) else convs:
            w, chans = sd.get(f"{conv}.weight"), own[f"{conv}.weight"].shape[1]
            if w is not None and w.ndim == 4 and w.shape[1] != chans:
                sd[f"{conv}.weight"] = timm.models.adapt_input_conv(chans, w, base_chans=w.shape[1])
        heads = pc.get("classifier") or ()
        for head in (heads,) if isinstance(heads, str) else heads:
            sd.pop(f"{head}.weight", None), sd.pop(f"{head}.bias", None)
        result = model.load_state_dict(sd, strict=False)
    except Exception as e:
        raise UserError(f"cannot load encoder.checkpoint into {name}: {reason(e, 160)}") from None
    wrong = [*result.missing_keys, *result.unexpected_keys]
    if wrong:
        raise UserError(f"encoder.checkpoint does not fit {name}: {len(result.missing_keys)} of its tensors missing, "
                        f"{len(result.unexpected_keys)} unexpected (e.g. {', '.join(wrong[:3])}); name the "
                        f"architecture it was saved from with encoder.name")
