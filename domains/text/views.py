"""Views and masks of token sequences, every draw from the caller's generator. A sample is [2 L]: token ids, then
each token's word index (from the tokenizer), so crops, deletions and shuffles move whole words."""
import torch


def word_numbers(words: torch.Tensor) -> torch.Tensor:
    """Word index per token [L] (-1: a token of no word, its own word) -> 0, 1, 2 … numbering the words in order."""
    start = torch.ones_like(words, dtype=torch.bool)
    start[1:] = (words[1:] != words[:-1]) | (words[1:] < 0)
    return start.cumsum(0) - 1


def uniform(rng: torch.Generator) -> float:
    return float(torch.rand((), generator=rng))


def crop(x: torch.Tensor, lo: float, hi: float, rng: torch.Generator) -> torch.Tensor:
    """A contiguous span of round(f W) of the W words (at least one), f uniform in [lo, hi]: [2 L] -> [2 L']."""
    w = word_numbers(x[1])
    n = int(w[-1]) + 1
    k = min(n, max(1, round((lo + (hi - lo) * uniform(rng)) * n)))
    first = int(torch.randint(0, n - k + 1, (), generator=rng))
    return x[:, (w >= first) & (w < first + k)]


def delete_words(x: torch.Tensor, p: float, rng: torch.Generator) -> torch.Tensor:
    """Each word dropped with probability p; one word is always kept."""
    w = word_numbers(x[1])
    n = int(w[-1]) + 1
    keep = torch.rand(n, generator=rng) >= p
    if not keep.any():
        keep[int(torch.randint(0, n, (), generator=rng))] = True
    return x[:, keep[w]]


def shuffle_words(x: torch.Tensor, k: int, rng: torch.Generator) -> torch.Tensor:
    """A local shuffle (Lample et al. 2018): word i moves to the rank of i + U(0, k + 1), so no word travels more than
    k places; the tokens of a word stay together and in order."""
    w = word_numbers(x[1])
    n = int(w[-1]) + 1
    key = torch.arange(n) + torch.rand(n, generator=rng) * (k + 1)
    rank = torch.empty(n, dtype=torch.long)
    rank[key.argsort()] = torch.arange(n)
    order = torch.argsort(rank[w] * (len(w) + 1) + torch.arange(len(w)))  # by new word rank, then position
    return x[:, order]


def view(x: torch.Tensor, span: tuple[float, float], deletion: float, shuffle: int, rng: torch.Generator):
    """One augmented view [L'] (ids only): a word-span crop, word deletion, then a local shuffle."""
    if span[0] < 1.0:
        x = crop(x, span[0], span[1], rng)
    if deletion > 0:
        x = delete_words(x, deletion, rng)
    if shuffle > 0:
        x = shuffle_words(x, shuffle, rng)
    return x[0]


def mask_count(n: int, ratio: float) -> int:
    """round(ratio n) tokens, at least one: BERT keeps every token visible (corrupted), so all may be masked."""
    return min(n, max(1, round(ratio * n)))


def random_positions(n: int, ratio: float, rng: torch.Generator) -> torch.Tensor:
    """BERT: mask_count positions uniformly at random, sorted [m]."""
    return torch.randperm(n, generator=rng)[:mask_count(n, ratio)].sort().values


def span_positions(n: int, ratio: float, rng: torch.Generator, p: float = 0.2, max_span: int = 10) -> torch.Tensor:
    """SpanBERT: spans of geometric length (parameter p, at most max_span) at random starts until mask_count tokens
    are covered; the last span is cut short so every sample of a length masks the same count. Sorted [m]."""
    m, covered = mask_count(n, ratio), torch.zeros(n, dtype=torch.bool)
    while int(covered.sum()) < m:
        length = min(max_span, 1 + int(torch.log(torch.rand((), generator=rng)) / torch.log(torch.tensor(1.0 - p))))
        start = int(torch.randint(0, n, (), generator=rng))
        for i in range(start, min(n, start + length)):
            if int(covered.sum()) < m:
                covered[i] = True
    return covered.nonzero()[:, 0]


def corrupt(ids: torch.Tensor, masked: torch.Tensor, mask_id: int, special: torch.Tensor, replace: tuple,
            rng: torch.Generator) -> torch.Tensor:
    """BERT's corruption of ids [L] at masked [m]: a share replace[0] become [MASK], replace[1] a random non-special
    token, the rest stay; special tokens at masked positions stay (they are not scored either)."""
    out = ids.clone()
    u = torch.rand(len(masked), generator=rng)
    normal = (~special).nonzero()[:, 0]
    random_ids = normal[torch.randint(0, len(normal), (len(masked),), generator=rng)]
    new = torch.where(u < replace[0], torch.full_like(random_ids, mask_id),
                      torch.where(u < replace[0] + replace[1], random_ids, ids[masked]))
    out[masked] = torch.where(special[ids[masked]], ids[masked], new)
    return out
