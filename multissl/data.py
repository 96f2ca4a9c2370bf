"""Step-indexed data: what a step sees depends only on (seed, step, position in the global batch), never
on the number of processes or loader workers — the basis of distributed parity and exact resume."""
import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from multissl.contracts import BatchedViews, Domain, LocalViews, Masked, Objective, VariableLength, has, optional


def mix(*ints: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class Views(Dataset):
    """Global draw k -> the k-th sample of an endless stream of seeded epoch permutations, turned into
    views (and a mask) with a generator seeded by (seed, k).

    `corrupt` (objectives with `corrupt_view`): a domain that masks by replacing values rather than
    dropping tokens (a `corrupt(view, masked, rng)` method, e.g. VIME's marginal draws for tables) gets
    view 0 = the un-augmented sample (`eval_input`) corrupted at the masked positions, kept clean as "clean" (the
    target); views 1.. stay the domain's augmented views (a contrastive partner for the corrupted sample).
    Other objectives never see the corruption: it would be an extra, one-sided augmentation of view 0."""

    def __init__(self, base: Dataset, domain, seed: int, n_global: int, corrupt: bool = False, n_local: int = 0,
                 n_future: int = 0, n_masks: int = 1, mask_ratio: float | None = None):
        self.base, self.domain, self.seed, self.n_global = base, domain, seed, n_global
        # local views (multi-crop) are asked of a domain only when it offers them (view_counts); future steps only of
        # a domain with episodes (contracts.Episodes)
        self.counts = {"n_global": n_global, **({"n_local": n_local} if n_local else {}),
                       **({"n_future": n_future} if n_future else {})}
        self.corrupt = optional(domain, Masked, "corrupt") if corrupt else None
        # a mask for each of the first n_masks views (Objective.masked_views), where masking drops tokens; a domain
        # that corrupts in place makes its one corrupted view in the loader
        drops = has(domain, Masked) and optional(domain, Masked, "drops_masked") is True
        self.n_masks = n_masks if drops and self.corrupt is None else 1
        self.mask_ratio = mask_ratio if has(domain, Masked) else None
        self.variable_length = has(domain, VariableLength)
        # a corrupting objective changes view 0 per sample (`corrupt`), and a variable-length domain's views are
        # padded by its `collate`: both take the per-sample views
        per_sample = self.corrupt is not None or self.variable_length
        self.draw = None if per_sample or not has(domain, BatchedViews) else domain.draw
        self._perm = (None, None)

    def __len__(self):
        return 2 ** 62

    def sample_index(self, k: int) -> int:
        epoch, pos = divmod(k, len(self.base))
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(mix(self.seed, epoch, 1))
            self._perm = (epoch, torch.randperm(len(self.base), generator=g))
        return int(self._perm[1][pos])

    def __getitem__(self, k: int):
        s = self.base[self.sample_index(k)]
        rng = torch.Generator().manual_seed(mix(self.seed, k, 2))
        item = {"y": s.get("y", -1), "skipped": s.get("skipped", 0)}
        if self.draw is not None:  # the views are made on the device, a batch at a time (make_views)
            item["drawn"] = self.draw(s["x"], rng, **self.counts)
            return item | self.masks(rng, [None] * self.n_masks)
        views = self.domain.views(s["x"], rng, **self.counts)
        if self.corrupt is not None:  # view 0 is the sample itself, corrupted at the mask below (VIME, BERT)
            views = [self.domain.eval_input(s["x"]), *views[1:]]
        counts = [int((~self.domain.collate([v])[1]).sum()) if self.variable_length else None  # its own tokens only
                  for v in views[:self.n_masks]]
        item |= {"views": views, **self.masks(rng, counts)}
        if self.corrupt is not None:  # drawn after the mask: the other domains' draws are unchanged
            item["clean"] = views[0]
            item["views"] = [self.corrupt(views[0], item["masked"], rng), *views[1:]]
        return item

    def masks(self, rng: torch.Generator, counts: list) -> dict:
        """keep [k] and masked [m] of view 0 (counts[i]: view i's token count, None = the domain's); with several
        masked views, lists of them, one per view (view 0's drawn first, so it is the one-mask draw)."""
        drawn = [thin_mask(*sample_mask(self.domain, rng, n), self.mask_ratio, rng) for n in counts]
        if len(drawn) == 1:
            return {"keep": drawn[0][0], "masked": drawn[0][1]}
        return {"keep": [k for k, _ in drawn], "masked": [m for _, m in drawn]}


def collate_of(domain):
    """One view of several samples -> (x [b ...], pad [b n] or None): the VariableLength domain's `collate`, else
    stacked."""
    return domain.collate if has(domain, VariableLength) else lambda inputs: (torch.stack(inputs), None)


def sample_mask(domain, rng: torch.Generator, n_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's (keep [k], masked [m]) from the domain's mask (Masked), drawn after its views whatever the
    objective, so a sample's views never depend on it; a domain without masked modelling keeps every token."""
    if has(domain, Masked):
        keep, masked = domain.mask(1, rng, **({} if n_tokens is None else {"n_tokens": n_tokens}))
        return keep[0], masked[0]
    return torch.arange(domain.num_tokens if n_tokens is None else n_tokens), torch.zeros(0, dtype=torch.long)


def thin_mask(keep: torch.Tensor, masked: torch.Tensor, ratio: float | None,
              rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's (keep [k], masked [m]) with at most round(ratio * n) tokens masked (at least one), n its token
    count (keep and masked together where the domain drops masked tokens, keep alone where keep covers every token):
    a random part of the domain's mask, drawn from rng, the rest made visible again (back in keep, where it drops
    them). The domain's mask as it is when ratio is None or it masks no more."""
    covers = len(masked) == 0 or bool(torch.isin(masked, keep).all())  # keep holds every token (text, VIME)
    n = len(keep) if covers else len(keep) + len(masked)
    target = max(1, round(ratio * n)) if ratio is not None else len(masked)
    if len(masked) <= target:
        return keep, masked
    chosen = torch.zeros(len(masked), dtype=torch.bool)
    chosen[torch.randperm(len(masked), generator=rng)[:target]] = True
    if not covers:
        keep = torch.cat([keep, masked[~chosen]]).sort().values
    return keep, masked[chosen]


def pad_indices(rows: list[torch.Tensor]) -> torch.Tensor:
    """Index tensors [k_i] -> [b max k_i], padded with -1 (multissl.encoder.gather_tokens)."""
    if all(len(r) == len(rows[0]) for r in rows):
        return torch.stack(rows)
    out = torch.full((len(rows), max(len(r) for r in rows)), -1, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def view_major(rows: list) -> torch.Tensor:
    """Per-sample index tensors [k] -> [b k]; per-sample lists of one per masked view -> [views*b k], view 0's
    rows first (the order of encoding the views together); -1 pads."""
    if torch.is_tensor(rows[0]):
        return pad_indices(rows)
    return pad_indices([r[v] for v in range(len(rows[0])) for r in rows])


class Collate:
    """Items -> a batch: "views" (n_views x [b ...]), "y" [b], "keep" [b k], "masked" [b m], "skipped", and
    for a variable-length domain "pad" (n_views x [b n], True = padding). Each view is batched by the domain's
    `collate` (default: stacked)."""

    def __init__(self, domain):
        self.batch = collate_of(domain)

    def __call__(self, items: list[dict]) -> dict:
        out = {
            "y": torch.tensor([it["y"] for it in items], dtype=torch.long),
            "keep": view_major([it["keep"] for it in items]),
            "masked": view_major([it["masked"] for it in items]),
            "skipped": torch.tensor(sum(it["skipped"] for it in items)),  # unreadable samples replaced
        }
        if "drawn" in items[0]:  # {name: [b ...]}: raw samples and view parameters, for the domain's apply
            out["drawn"] = stack_draws([it["drawn"] for it in items])
            return out
        views, pads = zip(*(self.batch(list(v)) for v in zip(*(it["views"] for it in items))))
        out["views"] = list(views)  # n_views x [b ...]
        if any(p is not None for p in pads):
            out["pad"] = list(pads)
        if "clean" in items[0]:
            out["clean"] = self.batch([it["clean"] for it in items])[0]  # [b ...] uncorrupted views[0]
        return out


def to_device(x, device):
    """Tensors anywhere in nested lists, tuples and dicts moved to `device` (without blocking: the loader pins
    them on a GPU machine); everything else as it is."""
    if torch.is_tensor(x):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def stack_draws(draws: list[dict]) -> dict:
    """Several samples' `draw` results -> one dict of batched tensors [b ...], as the domain's `apply` takes."""
    return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}


@torch.no_grad()
def sample_views(domain, drawn: dict) -> list[torch.Tensor]:
    """One sample's views from its draws: the domain's batched `apply` on a batch of one."""
    return [v[0] for v in domain.apply(stack_draws([drawn]))]


# On a CPU, `apply` takes the batch in chunks of about this many bytes of draws: fresh tensors of a whole batch of
# large samples cost more in page faults than in arithmetic, while a chunk's stay in the caches and the allocator's
# heap. A sample's views depend on its own draws only, so chunks change the speed, not the views.
CPU_CHUNK_BYTES = 2 << 20


def chunk_size(drawn: dict) -> int:
    """Samples per `apply` call: the whole batch on an accelerator, chunks of about CPU_CHUNK_BYTES on a CPU."""
    tensors = [v for v in drawn.values() if torch.is_tensor(v)]
    b = len(tensors[0])
    if tensors[0].device.type != "cpu" or b == 0:
        return max(b, 1)
    per_sample = sum(v[0].numel() * v.element_size() for v in tensors)
    return max(1, min(b, CPU_CHUNK_BYTES // max(per_sample, 1)))


@torch.no_grad()
def apply_views(domain, drawn: dict) -> list[torch.Tensor]:
    """The domain's batched `apply` of a batch of draws [b ...] -> its views (n_views x [b ...]). On a CPU, in chunks
    written into one tensor per view shape, so views of one shape are consecutive slices of one storage and
    `join` hands the encoder their batch without a copy."""
    b, k = len(next(iter(drawn.values()))), chunk_size(drawn)
    if k >= b:
        return list(domain.apply(drawn))
    views = None
    for i in range(0, b, k):
        part = domain.apply({n: v[i:i + k] for n, v in drawn.items()})
        if views is None:  # one [v b ...] tensor per view shape; view j is its slot among the views of its shape
            shapes = [tuple(v.shape[1:]) for v in part]
            store = {s: part[shapes.index(s)].new_empty((shapes.count(s), b, *s)) for s in set(shapes)}
            views = [store[s][shapes[:j].count(s)] for j, s in enumerate(shapes)]
        for out, v in zip(views, part):
            out[i:i + len(v)] = v
    return views


def join(views: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat of tensors of one shape [b ...] along dim 0 — without a copy when they already are consecutive slices
    of one contiguous storage (apply_views' views)."""
    first = views[0]
    step = first.numel()
    chained = all(v.is_contiguous() and v.shape == first.shape and v.dtype == first.dtype and v.device == first.device
                  and v.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
                  and v.storage_offset() == first.storage_offset() + i * step for i, v in enumerate(views))
    if len(views) == 1 or not chained:
        return torch.cat(views)
    return first.as_strided((len(views) * first.shape[0], *first.shape[1:]), first.stride(), first.storage_offset())


def make_views(domain, batch: dict) -> dict:
    """A batch with "drawn" (a domain with `draw`) gets its "views" from the domain's batched `apply`, where the
    batch is (on the device); other batches arrive with their views made."""
    if "drawn" in batch:
        batch = dict(batch)
        drawn = batch.pop("drawn")
        batch["views"] = apply_views(domain, drawn)
        batch |= {k: drawn[k] for k in CONTEXT if k in drawn}
    return batch


# what a domain's draw may give the objective as it is, beside the views (Domain.future: the actions taken and which
# future steps are still in the episode)
CONTEXT = ("action", "valid")


def resolve_workers(n, accelerator: bool | None = None) -> int:
    """data.num_workers: a count, or "auto". Training on an accelerator, auto is one per core but one (the training
    process's), at most 8. Training on the CPU, the training process's threads already use every core and a worker
    takes cycles from them, so auto is a quarter of the cores (none below 4), at most 8."""
    if n == "auto" or n is None:
        cores = len(os.sched_getaffinity(0))
        on_accelerator = torch.cuda.is_available() if accelerator is None else accelerator
        return max(0, min(cores - 1 if on_accelerator else cores // 4, 8))
    if isinstance(n, str) and not n.isdigit() or int(n) < 0:
        from multissl.errors import UserError
        raise UserError(f"data.num_workers={n!r} must be a count of loader processes (0 = none) or auto")
    return int(n)


def loader_options(workers) -> dict:
    """Worker processes that live as long as the loader and keep batches ahead; pinned memory for a GPU."""
    n = resolve_workers(workers)
    return {"num_workers": n, "pin_memory": torch.cuda.is_available(),
            **({"persistent_workers": True, "prefetch_factor": 4} if n else {})}


class StepSampler(Sampler):
    """Yields, for steps start..end-1, this process's slice of each micro-batch's draw positions.

    Step s owns draws [s*b, (s+1)*b); micro-batch i of it is the contiguous block [i*m, (i+1)*m) with
    m = b / accumulate, split evenly over processes — so a step sees the same samples however many
    processes or micro-batches it is cut into."""

    def __init__(self, start: int, end: int, global_batch: int, rank: int, world: int, accumulate: int = 1):
        self.start, self.end, self.b, self.rank, self.accumulate = start, end, global_batch, rank, accumulate
        self.micro = global_batch // accumulate
        self.local = self.micro // world

    def __len__(self):
        return max(self.end - self.start, 0) * self.accumulate

    def __iter__(self):
        for step in range(self.start, self.end):
            for i in range(self.accumulate):
                first = step * self.b + i * self.micro + self.rank * self.local
                yield list(range(first, first + self.local))


def view_counts(domain, objective, say: bool = True) -> tuple[int, int]:
    """(global, local) views per sample: the objective's `global_views` and the `local_views` it asks for, which a
    domain without local views (contracts.LocalViews) cannot give: then none, and `say` tells the run."""
    n_global, n_local = optional(objective, Objective, "global_views"), optional(objective, Objective, "local_views")
    if n_local and not (has(domain, LocalViews) and domain.local_views):
        if say:
            print(f"multissl: domain={domain.name} gives no local views here: {type(objective).__name__} compares its "
                  f"{n_global} global views only", file=sys.stderr)
        n_local = 0
    return n_global, n_local


def train_loader(base, domain, seed, n_global, global_batch, start, end, rank, world, workers=0, accumulate=1,
                 corrupt=False, n_local=0, n_future=0, n_masks=1, mask_ratio=None):
    sampler = StepSampler(start, end, global_batch, rank, world, accumulate)
    return DataLoader(Views(base, domain, seed, n_global, corrupt, n_local, n_future, n_masks, mask_ratio),
                      batch_sampler=sampler,
                      collate_fn=Collate(domain), **loader_options(workers))


def objective_loader(base, domain, objective, seed, global_batch, start, end, rank, world, workers=0, accumulate=1,
                     say=False):
    """train_loader with what the objective asks of the data: its view counts (view_counts), a corrupted view 0
    (`corrupt_view`), future steps (`future_steps`), masks of several views (`masked_views`) and of at most its
    share of the tokens (`mask_ratio`)."""
    n_global, n_local = view_counts(domain, objective, say=say)
    return train_loader(base, domain, seed, n_global, global_batch, start, end, rank, world, workers, accumulate,
                        corrupt=optional(objective, Objective, "corrupt_view"), n_local=n_local,
                        n_future=optional(objective, Objective, "future_steps"),
                        n_masks=optional(objective, Objective, "masked_views"),
                        mask_ratio=optional(objective, Objective, "mask_ratio"))


def steps(loader, accumulate: int):
    """Micro-batches grouped by optimizer step: yields lists of `accumulate` batches."""
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == accumulate:
            yield group
            group = []


class EvalInputs(Dataset):
    def __init__(self, base, domain):
        self.base, self.domain = base, domain
        self.input = optional(domain, Domain, "eval_raw") or domain.eval_input

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        s = self.base[i]
        return self.input(s["x"]), s.get("y", -1)


class EvalCollate:
    """(input, label) items -> (x, pad or None, y [b]); x is raw (for the domain's `preprocess` on the device)
    when the domain has `eval_raw`."""

    def __init__(self, domain):
        self.batch = collate_of(domain)
        self.raw = optional(domain, Domain, "eval_raw") is not None

    def __call__(self, items):
        x, pad = (torch.stack([i for i, _ in items]), None) if self.raw else self.batch([i for i, _ in items])
        return x, pad, torch.tensor([y for _, y in items], dtype=torch.long)


# Evaluation batches hold at most about this many bytes of model input (float32): 512 digits, about 100 images of
# 224 px. A batch of 512 large samples costs gigabytes once preprocessed, for no gain in speed on a CPU.
EVAL_BATCH_BYTES = 64 << 20


def eval_batch_size(ds: Dataset, most: int = 512) -> int:
    """Samples per evaluation batch: `most`, fewer when one sample's model input is large (EVAL_BATCH_BYTES)."""
    if len(ds) == 0:
        return most
    x = ds[0][0]
    size = sum(t.numel() for t in (x if isinstance(x, (list, tuple)) else [x]) if torch.is_tensor(t)) * 4
    return max(1, min(most, EVAL_BATCH_BYTES // max(size, 1)))


def eval_loader(base, domain, batch_size=None, workers=0):
    inputs = EvalInputs(base, domain)
    return DataLoader(inputs, batch_size=batch_size or eval_batch_size(inputs), collate_fn=EvalCollate(domain),
                      **(loader_options(workers) | {"persistent_workers": False}))


def eval_input_on(domain, x, device):
    """An eval batch on the device: raw samples go through the domain's batched `preprocess` there."""
    x = to_device(x, device)
    return domain.preprocess(x) if optional(domain, Domain, "eval_raw") is not None else x
