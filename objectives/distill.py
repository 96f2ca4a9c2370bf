"""Distillation: a frozen teacher's pooled representation of each view is the target of the student's, projected to
the teacher's width, on the very same augmented view — the "consistent" teacher of Beyer et al. (2022, "A good
teacher is patient and consistent"), the feature-regression form LightlyTrain distils with, here scored by cosine.
The teacher is an exported multissl encoder (`teacher=<run or encoder/ folder>`, opened as data by load_encoder) or
a local timm (images) or transformers (text, clips, audio) model folder, and is never trained; with no teacher named
it is a frozen copy of the student's initial weights, the random teacher of Sarnthein et al. (2023), which students
already learn from."""
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from multissl.encoder import encode_views
from multissl.errors import UserError, reason
from multissl.heads import mlp


def distill_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """s [b d] the student's projections, t [b d] the teacher's representations of the same views: mean of
    1 - cos(s, t); 0 when aligned, 2 when opposite. t gets no gradient."""
    return (1 - F.cosine_similarity(s, t.detach(), dim=-1)).mean()


def frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def load_teacher(path: str, domain) -> nn.Module:
    """An exported encoder of the same domain (its own config, built only from classes multissl knows), or a local
    model folder read as its encoder option reads it: timm's (config.json naming an `architecture`) for images,
    transformers' (a `model_type`) for text, clips and audio — their inputs reconciled with the domain's as there."""
    from multissl.domains.hf import HFEncoder
    from multissl.export import load_encoder
    kind = folder_kind(path)
    if kind:
        option, domains = {"architecture": ("timm", ("image",)), "model_type": ("hf", HFEncoder.domains)}[kind]
        if getattr(domain, "name", None) not in domains:
            raise UserError(f"objective.teacher={path} is a model encoder={option} reads, which takes domain "
                            f"{' or '.join(domains)}; this run is domain {domain.name}")
        if option == "timm":
            from multissl.domains.image import TimmEncoder
            return TimmEncoder(domain, checkpoint=path)
        return HFEncoder(domain, pretrained=path)
    teacher = load_encoder(path)
    if type(teacher.domain) is not type(domain):
        raise UserError(f"objective.teacher={path} was trained on domain {teacher.domain.name}, this run is domain "
                        f"{domain.name}; the teacher reads this run's views, so name an encoder of domain "
                        f"{domain.name}")
    return teacher.encoder


def folder_kind(path: str) -> str | None:
    """"architecture" for a timm folder, "model_type" for a transformers one, None for anything else (an export's
    config.json holds neither)."""
    meta = Path(path).expanduser() / "config.json"
    try:
        found = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
    except ValueError:
        return None
    return next((k for k in ("architecture", "model_type") if isinstance(found, dict) and k in found), None)


class Distill(nn.Module):
    global_views = 2

    def __init__(self, encoder, domain, teacher: str | None = None, projector=(512,)):
        super().__init__()
        self.source = teacher or "a frozen copy of the student's initial weights"
        self.teacher = frozen(load_teacher(teacher, domain) if teacher else copy.deepcopy(encoder))
        self.projector = mlp([encoder.dim, *projector, self.teacher.dim])  # student width -> the teacher's

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # dropout off and BatchNorm statistics fixed: the teacher never changes
        return self

    @torch.no_grad()
    def targets(self, views, pads) -> list[torch.Tensor]:
        try:
            return encode_views(self.teacher, views, pads)
        except RuntimeError as e:
            raise UserError(f"the teacher ({self.source}) cannot read this run's views ({reason(e, 100)}); distil "
                            f"from an encoder trained with the same domain settings (size, channels, "
                            f"tokenizer)") from None

    def forward(self, encoder, batch, sched):
        views, pads = batch["views"], batch.get("pad")
        reps = encode_views(encoder, views, pads)  # n_views x [b d_student]
        t = self.targets(views, pads)  # n_views x [b d_teacher]
        terms = [distill_loss(self.projector(r), ti) for r, ti in zip(reps, t)]
        loss = sum(terms) / len(terms)
        return loss, {"rep": reps[0].detach(), "cos": 1 - loss.detach()}

    @torch.no_grad()
    def branches(self, encoder, batch):
        """online: the student's projection; target: the teacher's representation, both unit length."""
        views, pads = batch["views"][:1], batch.get("pad")
        pads = pads[:1] if pads else None
        s = self.projector(encode_views(encoder, views, pads)[0])
        return F.normalize(s, dim=1), F.normalize(self.targets(views, pads)[0], dim=1)
