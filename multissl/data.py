"""Step-indexed data: what a step sees depends only on (seed, step, position in the global batch), never
on the number of processes or loader workers — the basis of distributed parity and exact resume."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def mix(*ints: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class Views(Dataset):
    """Global draw k -> the k-th sample of an endless stream of seeded epoch permutations, turned into
    views (and a mask) with a generator seeded by (seed, k).

    `corrupt` (for objectives that consume the mask): a domain that masks by replacing values rather
    than dropping tokens (a `corrupt(view, masked, rng)` method, e.g. VIME's marginal draws for tables)
    gets views[0] corrupted at the masked positions, and the clean view is kept as "clean" (the target).
    Other objectives never see the corruption: it would be an extra, one-sided augmentation of view 0."""

    def __init__(self, base: Dataset, domain, seed: int, n_global: int, corrupt: bool = False):
        self.base, self.domain, self.seed, self.n_global = base, domain, seed, n_global
        self.corrupt = corrupt and hasattr(domain, "corrupt")
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
        views = self.domain.views(s["x"], rng, self.n_global)
        keep, masked = self.domain.mask(1, rng)
        item = {"views": views, "y": s.get("y", -1), "keep": keep[0], "masked": masked[0],
                "skipped": s.get("skipped", 0)}
        if self.corrupt:  # drawn after the mask: the other domains' draws are unchanged
            item["clean"] = views[0]
            item["views"] = [self.domain.corrupt(views[0], masked[0], rng), *views[1:]]
        return item


def collate(items: list[dict]) -> dict:
    out = {
        "views": [torch.stack(v) for v in zip(*(it["views"] for it in items))],  # n_views x [b ...]
        "y": torch.tensor([it["y"] for it in items], dtype=torch.long),
        "keep": torch.stack([it["keep"] for it in items]),
        "masked": torch.stack([it["masked"] for it in items]),
        "skipped": torch.tensor(sum(it["skipped"] for it in items)),  # unreadable samples replaced
    }
    if "clean" in items[0]:
        out["clean"] = torch.stack([it["clean"] for it in items])  # [b ...] uncorrupted views[0]
    return out


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


def train_loader(base, domain, seed, n_global, global_batch, start, end, rank, world, workers=0, accumulate=1,
                 corrupt=False):
    sampler = StepSampler(start, end, global_batch, rank, world, accumulate)
    return DataLoader(Views(base, domain, seed, n_global, corrupt), batch_sampler=sampler, collate_fn=collate,
                      num_workers=workers, persistent_workers=False)


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

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        s = self.base[i]
        return self.domain.eval_input(s["x"]), s.get("y", -1)


def eval_loader(base, domain, batch_size=256, workers=0):
    return DataLoader(EvalInputs(base, domain), batch_size=batch_size, num_workers=workers)
