"""`encoder=bag`: a bag of n-grams, fastText's encoder (Joulin et al. 2017, "Bag of Tricks for Efficient Text
Classification"; its n-grams hashed into buckets as in Mikolov et al. 2018): each token is the embedding of its id
plus the mean of the embeddings of the hashed n-grams (2 .. `ngrams` consecutive tokens) that end at it, and the text
is the mean of its tokens (`pool=mean`, fastText's), or their mean weighted by each id's inverse document frequency
in the training split (`pool=idf`, the weighting of TF-IDF and of the weighted word-vector averages of Arora et al.
2017, "A Simple but Tough-to-Beat Baseline for Sentence Embeddings"; on the text suite it did not beat the plain mean,
docs/suites.md). The tokenizer's pieces are words and word fragments, so the pieces' n-grams cover words,
fragments and short phrases. No attention and no positions: it learns in minutes on a CPU, where a transformer is
still finding its footing; masked objectives get a token per kept position, its n-grams over the kept tokens alone
(a masked token is never read)."""
import torch
from torch import nn

from multissl.encoder import kept_padding
from multissl.errors import UserError

PRIME, MODULUS = 1_000_003, 2_147_483_647  # the rolling hash: h(a..z) = (h(a..y) * PRIME + z) mod MODULUS, in int64


def ngram_ids(ids: torch.Tensor, valid: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [b k], valid [b k] -> (hash [b k] of the n tokens ending at each position, whether all n are valid)."""
    h, ok = ids.clone(), valid.clone()
    for _ in range(n - 1):  # extend each window one token to the left
        prev_h = torch.nn.functional.pad(h[:, :-1], (1, 0))
        prev_ok = torch.nn.functional.pad(ok[:, :-1], (1, 0), value=False)
        h, ok = (prev_h * PRIME + ids) % MODULUS, prev_ok & valid
    return h, ok


class BagEncoder(nn.Module):
    supports_masking = True
    supports_padding = True
    domains = ("text",)

    def __init__(self, domain, dim: int = 256, ngrams: int = 3, buckets: int = 1 << 16, pool: str = "mean"):
        super().__init__()
        if pool not in ("idf", "mean"):
            raise UserError(f"encoder.pool must be idf or mean, got {pool!r}")
        self.dim, self.ngrams, self.buckets, self.pool = dim, ngrams, buckets, pool
        idf = getattr(domain, "idf", None) if pool == "idf" else None  # None from an export's state: saved weights
        weight = torch.ones(domain.vocab.size) if idf is None else idf.clone().float()
        weight[domain.vocab.special] = 0  # never pooled: [CLS]-like and [MASK] pieces mean nothing
        self.register_buffer("weight", weight)  # [V] each id's weight in the pooled text
        self.words = nn.Embedding(domain.vocab.size, dim)  # [V d]
        self.grams = nn.Embedding(buckets, dim) if ngrams > 1 else None  # [buckets d], shared by every n
        self.norm = nn.LayerNorm(dim)
        for e in (self.words, self.grams):
            if e is not None:
                nn.init.normal_(e.weight, std=dim ** -0.5)

    def forward(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        """x ids [b n], keep [b k] (-1 = padding), pad [b n] -> (tokens [b k d], pooled [b d])."""
        b, n = x.shape
        keep = torch.arange(n, device=x.device).expand(b, n) if keep is None else keep
        pad = torch.zeros(b, n, dtype=torch.bool, device=x.device) if pad is None else pad
        kpad = kept_padding(pad, keep)  # [b k]
        ids = torch.gather(x, 1, keep.clamp_min(0))  # [b k]
        t = self.words(ids)  # [b k d]
        if self.grams is not None:
            total, count = torch.zeros_like(t), torch.zeros_like(t[..., :1])  # [b k d], [b k 1]
            for g in range(2, self.ngrams + 1):
                h, ok = ngram_ids(ids, ~kpad, g)
                w = ok[..., None].to(t.dtype)
                total, count = total + self.grams(h % self.buckets) * w, count + w
            t = t + total / count.clamp_min(1)
        t = self.norm(t).masked_fill(kpad[..., None], 0)
        w = self.weight[ids].masked_fill(kpad, 0)  # [b k]
        w = torch.where(w.sum(1, keepdim=True) > 0, w, (~kpad).to(w.dtype))[..., None]  # only special ids: a mean
        return t, (t * w).sum(1) / w.sum(1).clamp_min(1e-6)
