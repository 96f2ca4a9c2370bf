"""Label-free and label-using health signals: kNN accuracy, RankMe, embedding std, online linear probe; and
`evaluate`, which the training loop runs every trainer.eval_every steps and at the end."""
import sys

import torch
import torch.nn.functional as F
from torch import nn

from multissl import spectral
from multissl.contracts import Downstream, Masked, Objective, has, optional
from multissl.data import eval_input_on, eval_loader, pad_indices, sample_mask, thin_mask, to_device
from multissl.errors import UserError

# With trainer.eval_samples null an evaluation embeds at most this many samples per split, so its cost stays bounded
# however large the data; a smaller split is used whole. Above every embedded default's split, so their figures are
# those of the whole split.
EVAL_TRAIN_CAP = 20_000
EVAL_TEST_CAP = 5_000
# Held-out rows scored against the training bank at once: the kNN's similarities are [KNN_BLOCK n_train] at a time.
KNN_BLOCK = 512


def subset(ds, limit: int | None):
    """At most `limit` samples of ds, evenly spread over it (every class of a sorted set); None = all."""
    if ds is None or limit is None or len(ds) <= limit:
        return ds
    return torch.utils.data.Subset(ds, torch.linspace(0, len(ds) - 1, limit).long().tolist())


def eval_caps(limit) -> tuple[int, int]:
    """(training, held-out) samples an evaluation uses at most, for trainer.eval_samples `limit`: null = the bounded
    defaults EVAL_TRAIN_CAP and EVAL_TEST_CAP, a count = that many of each split."""
    if limit is None:
        return EVAL_TRAIN_CAP, EVAL_TEST_CAP
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UserError(f"trainer.eval_samples must be null or a count of at least 1, got {limit!r}: null "
                        f"evaluates on at most {EVAL_TRAIN_CAP:,} training and {EVAL_TEST_CAP:,} held-out samples; "
                        f"a count larger than both splits evaluates on every sample")
    return limit, limit


def eval_sets(train_set, test_set, limit) -> tuple:
    """The training and held-out samples an evaluation uses (evenly spread; a split under its cap whole), for
    trainer.eval_samples `limit` (eval_caps)."""
    train_cap, test_cap = eval_caps(limit)
    return subset(train_set, train_cap), subset(test_set, test_cap)


def cap_note(train_set, test_set, limit) -> str | None:
    """One line naming each split a cap cut ("evaluated on 20,000 of 1,200,000 training samples"), None when the
    evaluation uses every sample."""
    cut = [f"{len(used):,} of {len(whole):,} {name} samples"
           for name, whole, used in zip(("training", "held-out"), (train_set, test_set),
                                        eval_sets(train_set, test_set, limit))
           if whole is not None and len(used) < len(whole)]
    return f"evaluated on {' and '.join(cut)} (trainer.eval_samples)" if cut else None


def evaluate(encoder, objective, domain, train_set, test_set, probe, device, knn_k: int = 20,
             knn_temperature: float = 0.07, limit: int | None = None) -> dict:
    """kNN accuracy and online-probe accuracy on the held-out split; RankMe and std of the training
    representations (and of the projector output, where the objective has one); their spectral diagnostics; and the
    domain's own downstream metrics where it has them; `eval/train_samples` and `eval/test_samples`, how many of each
    split it used. `limit` is trainer.eval_samples (eval_caps)."""
    was = encoder.training
    encoder.eval()
    train_set, test_set = eval_sets(train_set, test_set, limit)
    out, tr_x, labelled = heldout_metrics(encoder, domain, train_set, test_set, device, knn_k, knn_temperature)
    out |= spectral_metrics(encoder, objective, domain, train_set, tr_x, device)
    if labelled is not None and probe is not None:
        te_x, te_y = labelled[2:]
        out["probe_test_acc"] = probe.accuracy(te_x.to(device), te_y.to(device))
    out |= domain_metrics(encoder, domain, device, downstream_cap(limit))
    encoder.train(was)
    return out | {"eval/train_samples": len(train_set), "eval/test_samples": 0 if test_set is None else len(test_set)}


def downstream_cap(limit) -> int:
    """The one per-split cap a domain's own metrics take, for trainer.eval_samples `limit`: the training cap, so
    that they fit their references on as many training samples as the kNN has."""
    return eval_caps(limit)[0]


def spectral_metrics(encoder, objective, domain, train_set, tr_x, device) -> dict:
    """From the training-set representations tr_x [n d]: RankMe and std of the projector output (where the objective
    has one), effective ranks and duality criteria (multissl.spectral), and the rank differential of an objective
    with two branches."""
    proj, out, z = optional(objective, Objective, "projector"), {}, None
    if proj is not None:
        with torch.no_grad():
            was_p = proj.training
            z = proj.eval()(tr_x.to(device)).float().cpu()
            proj.train(was_p)
        out |= {"rankme_proj": rankme(z), "emb_std_proj": embedding_std(z)}
    return out | spectral.diagnostics(tr_x, z) | branch_ranks(objective, encoder, domain, train_set, device)


def eval_masks(domain, x, pad, rng: torch.Generator, corrupt: bool, ratio: float | None = None) -> dict:
    """keep, masked (and, for an objective with corrupt_view on a domain that has `corrupt`, the corrupted view and
    the clean one) for an evaluation batch x, as the training batches have them: per sample on a variable-length
    domain (its own tokens only), at most `ratio` of the tokens masked (the objective's mask_ratio)."""
    if pad is None and has(domain, Masked) and ratio is None:
        keep, masked = domain.mask(len(x), rng)
    else:  # per sample: a variable-length sample's own tokens, or every token of a domain without masks
        counts = [None] * len(x) if pad is None else [int((~p).sum()) for p in pad.cpu()]
        rows = [thin_mask(*sample_mask(domain, rng, n), ratio if has(domain, Masked) else None, rng) for n in counts]
        keep, masked = pad_indices([k for k, _ in rows]), pad_indices([m for _, m in rows])
    out = {"views": [x], "keep": keep.to(x.device), "masked": masked.to(x.device)}
    corrupt_fn = optional(domain, Masked, "corrupt") if corrupt else None
    if corrupt_fn is not None:
        out |= {"clean": x, "views": [torch.stack([corrupt_fn(v, m, rng) for v, m in zip(x, out["masked"])])]}
    return out | ({} if pad is None else {"pad": [pad]})


@torch.no_grad()
def branch_ranks(objective, encoder, domain, dataset, device, seed: int = 0) -> dict:
    """rdm/* effective ranks of the objective's two branches (its `branches`) on the un-augmented samples of
    `dataset`, masked with a fixed seed; {} for an objective with one branch."""
    branches = optional(objective, Objective, "branches")
    if branches is None or dataset is None:
        return {}
    was = objective.training
    objective.eval()
    rng, online, target = torch.Generator().manual_seed(seed), [], []
    corrupt = optional(objective, Objective, "corrupt_view")
    for x, pad, _ in eval_loader(dataset, domain):
        x, pad = eval_input_on(domain, x, device), to_device(pad, device)
        o, t = branches(encoder, eval_masks(domain, x, pad, rng, corrupt, optional(objective, Objective, "mask_ratio")))
        online.append(o.float().cpu())
        target.append(t.float().cpu())
    objective.train(was)
    return spectral.rank_difference(torch.cat(online), torch.cat(target))


def collapse_warning(metrics: dict, min_rankme: float, min_std: float, hint: str | None = None) -> dict:
    """{"collapse_warning": 1} and a warning on stderr when RankMe or the embedding std is below its threshold;
    `hint` is the objective's own advice (its `collapse_hint`)."""
    if metrics["rankme"] >= min_rankme and metrics["emb_std"] >= min_std:
        return {}
    advice = hint or "check the objective's variance/negatives terms"
    print(f"multissl: warning: the representation looks collapsed (RankMe {metrics['rankme']:.2f}, "
          f"std {metrics['emb_std']:.2e}; thresholds trainer.collapse_rankme={min_rankme}, "
          f"trainer.collapse_std={min_std}); lower optim.base_lr, or {advice}", file=sys.stderr)
    return {"collapse_warning": 1}


def heldout_metrics(encoder, domain, train_set, test_set, device, k: int = 20, temperature: float = 0.07):
    """RankMe and std of the training-set representations; kNN accuracy on the held-out split when
    labels exist. Returns (metrics, train features, labelled test (features, labels) or None)."""
    tr_x, tr_y = embed_all(encoder, eval_loader(train_set, domain), device, domain)
    out = {"rankme": rankme(tr_x), "emb_std": embedding_std(tr_x)}
    if test_set is None or not (tr_y >= 0).any():
        return out, tr_x, None
    te_x, te_y = embed_all(encoder, eval_loader(test_set, domain), device, domain)
    a, b = tr_y >= 0, te_y >= 0
    if not b.any():  # no held-out label that training knows (unseen classes count as unlabelled): nothing to score
        return out, tr_x, None
    out["knn_acc"] = knn_accuracy(tr_x[a], tr_y[a], te_x[b], te_y[b], k, temperature)
    return out, tr_x, (tr_x[a], tr_y[a], te_x[b], te_y[b])


def domain_metrics(encoder, domain, device, limit: int | None = None) -> dict:
    """The domain's own held-out metrics where it has them (`downstream_metrics(embed)`, e.g. the tabular
    linear probe vs. gradient-boosted trees), with `embed(dataset) -> [n d]` un-augmented representations;
    `limit` caps the samples it scores per split (None = all)."""
    metrics = (domain.downstream_metrics if has(domain, Downstream) else None)
    if metrics is None:
        return {}
    embed = lambda ds: embed_all(encoder, eval_loader(ds, domain), device, domain)[0]  # noqa: E731
    return metrics(embed, limit=limit)


@torch.no_grad()
def embed_all(encoder, loader, device, domain) -> tuple[torch.Tensor, torch.Tensor]:
    """Representations [n d] and labels [n] of an eval_loader's samples (raw ones preprocessed on the device)."""
    feats, labels = [], []
    for x, pad, y in loader:
        x, pad = eval_input_on(domain, x, device), to_device(pad, device)
        feats.append((encoder(x) if pad is None else encoder(x, pad=pad))[1].float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 20, temperature: float = 0.07,
                 block: int = KNN_BLOCK) -> float:
    """Weighted kNN of Wu et al. 2018: cosine neighbours vote with weight exp(sim / T)."""
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    pred = knn_classes(train_x, train_y, test_x, n_cls, k, temperature, block)
    return (pred == test_y).sum().item() / len(test_x)


def knn_classes(train_x, train_y, test_x, n_cls: int, k: int = 20, temperature: float = 0.07,
                block: int = KNN_BLOCK) -> torch.Tensor:
    """Classes [q] that each held-out row of test_x [q d] gets from its k most similar rows of train_x [n d] (cosine,
    weights exp(sim / T)), `block` held-out rows at a time: only their top k outlive the block, so memory is
    [block n], never [q n]. Each row's neighbours come from its own full row of similarities, as in one matrix."""
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    return torch.cat([knn_predict(test_x[i:i + block] @ train_x.T, train_y, n_cls, k, temperature)  # sim [block n]
                      for i in range(0, len(test_x), block)])


def knn_predict(sim: torch.Tensor, train_y: torch.Tensor, n_cls: int, k: int = 20, temperature: float = 0.07):
    """Classes [q] voted by each query's k most similar training samples (sim [q n] cosine), weights exp(sim / T)."""
    top, idx = sim.topk(min(k, sim.shape[1]), dim=1)
    votes = torch.zeros(len(top), n_cls, dtype=top.dtype).scatter_add_(1, train_y[idx], (top / temperature).exp())
    return votes.argmax(1)


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """Garrido et al. 2022: exp of the entropy of the normalized singular values of [n d] embeddings."""
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def embedding_std(z: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalized embeddings; 1/sqrt(d) when spread, 0 when collapsed."""
    return float(F.normalize(z.float(), dim=1).std(0).mean())


class OnlineProbe(nn.Module):
    """Linear classifier on detached representations, own optimizer: it never updates the encoder."""

    def __init__(self, dim: int, n_classes: int, lr: float = 1e-3):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.fc = nn.Linear(dim, n_classes)
        self.opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=0.0)

    def step(self, rep: torch.Tensor, y: torch.Tensor) -> dict:
        labeled = y >= 0
        if labeled.sum() < 2:
            return {}
        logits = self(rep.detach()[labeled].float())
        loss = F.cross_entropy(logits, y[labeled])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"probe_loss": loss.item(), "probe_acc": (logits.argmax(1) == y[labeled]).float().mean().item()}

    def forward(self, rep):
        return self.fc(self.norm(rep))

    @torch.no_grad()
    def accuracy(self, rep, y) -> float:
        was = self.training
        self.eval()
        acc = (self(rep.float()).argmax(1) == y).float().mean().item()
        self.train(was)
        return acc
