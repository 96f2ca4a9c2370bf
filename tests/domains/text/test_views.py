"""Views move whole words; masks cover real tokens only, in BERT's or SpanBERT's pattern; BERT's 80/10/10 corruption
spares special tokens; masked language modelling's loss against a reference written here."""
import torch
import torch.nn.functional as F

from multissl.domains.text.losses import masked_token_loss
from multissl.domains.text.views import (corrupt, crop, delete_words, mask_count, random_positions, shuffle_words,
                                         span_positions, view, word_numbers)


def sample(n_words=12, per_word=(1, 3, 2)):
    """[2 L]: ids 100 * word + piece, word index per token (words of 1-3 pieces)."""
    ids, words = [], []
    for w in range(n_words):
        for p in range(per_word[w % len(per_word)]):
            ids.append(100 * w + p)
            words.append(w)
    return torch.tensor([ids, words])


def words_of(ids):
    """The word of each id and whether its pieces are whole and in order."""
    out = []
    for i in ids.tolist():
        if i % 100 == 0:
            out.append([i])
        else:
            out[-1].append(i)
    return out


def whole(ids, x):
    """Every word in ids is complete (all its pieces, in order)."""
    full = {w[0] // 100: w for w in words_of(x[0])}
    return all(w == full[w[0] // 100] for w in words_of(ids))


def test_word_numbers_treat_tokens_of_no_word_as_their_own_words():
    assert word_numbers(torch.tensor([0, 0, 1, -1, -1, 2])).tolist() == [0, 0, 1, 2, 3, 4]


def test_crop_keeps_a_contiguous_run_of_whole_words_of_the_asked_share():
    x, g = sample(), torch.Generator().manual_seed(0)
    for _ in range(50):
        out = crop(x, 0.25, 0.5, g)
        w = sorted({i // 100 for i in out[0].tolist()})
        assert w == list(range(w[0], w[0] + len(w))) and 3 <= len(w) <= 6  # round(0.25..0.5 of 12)
        assert whole(out[0], x)


def test_deletion_removes_whole_words_and_keeps_one():
    x, g = sample(), torch.Generator().manual_seed(1)
    counts = []
    for _ in range(200):
        out = delete_words(x, 0.3, g)
        assert whole(out[0], x) and len(out[0]) > 0
        counts.append(len({i // 100 for i in out[0].tolist()}))
    assert abs(sum(counts) / len(counts) - 12 * 0.7) < 0.5
    assert len(delete_words(x, 1.0, g)[0]) > 0


def test_a_local_shuffle_moves_words_at_most_k_places_and_keeps_their_pieces_together():
    x, g = sample(), torch.Generator().manual_seed(2)
    moved = False
    for _ in range(50):
        out = shuffle_words(x, 2, g)
        order = [w[0] // 100 for w in words_of(out[0])]
        assert sorted(order) == list(range(12)) and whole(out[0], x)
        assert all(abs(pos - w) <= 2 for pos, w in enumerate(order))
        moved |= order != list(range(12))
    assert moved


def test_simcse_views_are_the_text_itself():
    x, g = sample(), torch.Generator().manual_seed(3)
    assert torch.equal(view(x, (1.0, 1.0), 0.0, 0, g), x[0])


def test_bert_masks_the_asked_share_of_real_tokens_only():
    g = torch.Generator().manual_seed(4)
    for n in (1, 2, 7, 40):
        m = random_positions(n, 0.15, g)
        assert len(m) == mask_count(n, 0.15) >= 1 and m.max() < n and len(set(m.tolist())) == len(m)
        assert torch.equal(m, m.sort().values)


def test_span_masks_cover_the_same_count_in_runs():
    g = torch.Generator().manual_seed(5)
    runs = []
    for _ in range(100):
        m = span_positions(60, 0.3, g, p=0.2, max_span=10)
        assert len(m) == mask_count(60, 0.3) and m.max() < 60 and len(set(m.tolist())) == len(m)
        starts = (m[1:] - m[:-1] != 1).sum().item() + 1
        runs.append(len(m) / starts)
    assert sum(runs) / len(runs) > 2.0  # contiguous spans, not scattered tokens (random masking: about 1.4)


def test_corruption_is_80_10_10_and_spares_special_tokens():
    g = torch.Generator().manual_seed(6)
    vocab, mask_id = 50, 4
    special = torch.zeros(vocab, dtype=torch.bool)
    special[:5] = True
    ids = torch.arange(10, 50).repeat(50)  # [2000] no special ids
    masked = torch.arange(0, len(ids), 2)
    out = corrupt(ids, masked, mask_id, special, (0.8, 0.1, 0.1), g)
    unmasked = torch.ones(len(ids), dtype=torch.bool)
    unmasked[masked] = False
    assert torch.equal(out[unmasked], ids[unmasked])
    o, i = out[masked], ids[masked]
    share_mask, same = (o == mask_id).float().mean().item(), (o == i).float().mean().item()
    assert abs(share_mask - 0.8) < 0.04 and abs(same - 0.1 - 0.1 / 40) < 0.03
    assert not special[o[(o != mask_id)]].any()  # random replacements are never special tokens
    ids2 = torch.tensor([2, 11, 3, 12])  # [CLS] x [SEP] y
    out2 = corrupt(ids2, torch.tensor([0, 2]), mask_id, special, (1.0, 0.0, 0.0), g)
    assert torch.equal(out2, ids2)  # special tokens at masked positions stay


def test_masked_token_loss_matches_a_reference():
    g = torch.Generator().manual_seed(7)
    b, n, v = 3, 6, 11
    ids = torch.randint(0, v, (b, n), generator=g)
    ids[1, 2] = 0  # a special id at a masked position: not scored
    masked = torch.tensor([[0, 3], [2, 4], [5, -1]])  # -1: padding of the index tensor
    logits = torch.randn(b, 2, v, generator=g)  # [b m v]: at the masked positions, in their order
    special = torch.zeros(v, dtype=torch.bool)
    special[0] = True
    ref = torch.stack([F.cross_entropy(logits[i, k][None], ids[i, masked[i, k]][None])
                       for i, k in [(0, 0), (0, 1), (1, 1), (2, 0)]]).mean()
    torch.testing.assert_close(masked_token_loss(logits, ids, masked, special), ref)
    none = torch.full((b, 2), -1)
    assert masked_token_loss(logits, ids, none, special).item() == 0.0
