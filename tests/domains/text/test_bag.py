"""encoder=bag: the bag of hashed n-grams (fastText) trains with contrastive, distillation and masked objectives
(every parameter learns), its n-grams are the windows of consecutive tokens a loop finds, a padded batch equals each
text alone, a masked token is never read, and a run exports an encoder that embeds as it trained."""
import math

import pytest
import torch

import multissl
from multissl.domains.text.bag import MODULUS, PRIME, ngram_ids
from multissl.train import build_domain, build_models

from texts import one_step_trains_every_parameter, padded_batch_equals_each_text_alone, text_args

BAG = ("encoder=bag", "encoder.dim=16", "encoder.buckets=64")


def test_ngram_ids_hash_every_window_of_valid_consecutive_tokens():
    ids = torch.tensor([[3, 7, 2, 9, 0]])
    valid = torch.tensor([[True, True, True, True, False]])
    h, ok = ngram_ids(ids, valid, 3)
    for i in range(5):
        window = ids[0, i - 2:i + 1].tolist() if i >= 2 else None
        assert bool(ok[0, i]) == (window is not None and all(valid[0, i - 2:i + 1]))
        if ok[0, i]:  # ((a * P + b) * P + c) mod M, in Python's exact integers
            a, b, c = window
            assert int(h[0, i]) == (a * PRIME ** 2 + b * PRIME + c) % MODULUS


def test_the_default_width_keeps_a_text_nearest_to_texts_that_share_its_words():
    """Before any training a text's neighbours are found by the tokens it shares with them (as TF-IDF's are), which a
    narrow mean of random token vectors blurs: at the configured width, the untrained bag's nearest neighbour of a short
    text of a Zipf-distributed corpus shares a token with it for nearly every text that shares one with any other (at
    64 wide, about 6 in 7)."""
    from importlib import resources
    from types import SimpleNamespace

    import yaml

    from multissl.domains.text.bag import BagEncoder
    dim = yaml.safe_load((resources.files("multissl.configs") / "encoder" / "bag.yaml").read_text())["dim"]
    n, v, k = 400, 5000, 5  # texts of k tokens, ids 3.. v+2 (0..2: special)
    rank = torch.arange(1, v + 1).float()
    g = torch.Generator().manual_seed(0)
    ids = torch.multinomial((1 / rank) / (1 / rank).sum(), n * k, replacement=True, generator=g).view(n, k) + 3
    domain = SimpleNamespace(vocab=SimpleNamespace(size=v + 3, special=torch.tensor([0, 1, 2])))
    present = torch.zeros(n, v + 3).scatter_(1, ids, 1.0)  # [n V]
    shared = (present @ present.T).fill_diagonal_(0)  # [n n] tokens two texts share
    torch.manual_seed(0)
    with torch.no_grad():
        e = torch.nn.functional.normalize(BagEncoder(domain, dim=dim)(ids)[1], dim=1)  # [n d]
    nearest = (e @ e.T).fill_diagonal_(-2).argmax(1)  # [n]
    some = shared.sum(1) > 0
    assert (shared[torch.arange(n), nearest] > 0)[some].float().mean() >= 0.95


@pytest.mark.parametrize("objective", ["simclr", "byol", "mae"])
def test_one_step_trains_every_bag_parameter(tiny, tmp_path, corpus, objective):
    one_step_trains_every_parameter(tiny.config(*text_args(tmp_path, corpus), *BAG, f"objective={objective}",
                                                "data.batch_size=8", tiny_encoder=False))


def test_a_padded_batch_equals_each_text_alone_and_masked_tokens_are_not_read(tiny, tmp_path, corpus):
    cfg = tiny.config(*text_args(tmp_path, corpus), *BAG, tiny_encoder=False)
    domain = build_domain(cfg)
    enc = build_models(cfg, domain)[0].eval()
    padded_batch_equals_each_text_alone(enc, domain, ["a cat", "the horse number 3 is odd and horses like it", "frog"])
    x, pad = domain.preprocess(["the horse number 3 is odd and horses like it"])
    with torch.no_grad():
        keep = torch.tensor([[0, 1, 3, 4]])  # position 2 masked: whatever id it holds, the kept tokens are the same
        other = x.clone()
        other[0, 2] = (other[0, 2] + 5) % domain.vocab.size
        a, _ = enc(x, keep=keep, pad=pad)
        b, _ = enc(other, keep=keep, pad=pad)
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_the_text_is_its_tokens_mean_or_weighted_by_the_training_splits_idf(tiny, tmp_path, corpus):
    cfg = tiny.config(*text_args(tmp_path, corpus), *BAG, "encoder.pool=idf", tiny_encoder=False)
    domain = build_domain(cfg)
    enc = build_models(cfg, domain)[0].eval()
    train = domain.dataset("train")
    docs = [set(train.sample(i)[0].tolist()) for i in range(len(train))]
    x, pad = domain.preprocess(["the horse number 3 is odd", "a cat"])
    with torch.no_grad():
        tokens, pooled = enc(x, pad=pad)
    for row in range(2):  # the reference: scikit-learn's smoothed idf, counted here, special ids left out
        ids = x[row][~pad[row]].tolist()
        w = torch.tensor([0.0 if i in domain.vocab.special.nonzero().flatten().tolist() else
                          1 + math.log((1 + len(docs)) / (1 + sum(i in d for d in docs))) for i in ids])
        want = (tokens[row, :len(ids)] * w[:, None]).sum(0) / w.sum()
        torch.testing.assert_close(pooled[row], want, atol=1e-5, rtol=1e-5)
    plain = build_models(tiny.config(*text_args(tmp_path, corpus), *BAG, "encoder.pool=mean", tiny_encoder=False),
                         domain)[0].eval()
    with torch.no_grad():
        tokens, pooled = plain(x, pad=pad)
    torch.testing.assert_close(pooled[1], tokens[1, :int((~pad[1]).sum())].mean(0))  # fastText's mean


def test_a_run_exports_a_bag_that_embeds_as_it_trained(tiny, tmp_path, corpus):
    folder = tiny.run(*text_args(tmp_path, corpus), *BAG, "encoder.pool=idf", "trainer.max_steps=2", tiny_encoder=False)
    enc = multissl.load_encoder(folder)
    out = enc.embed(["a cat", "frog number 2"])
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    assert enc.encoder.weight.min() == 0 and enc.encoder.weight.max() > 1  # the run's idf weights came with it


def test_short_texts_default_to_the_bag_unless_the_command_chooses(tmp_path, capsys, corpus):
    """The plain `domain=text` on short texts (a median of at most SHORT_TEXT_WORDS words) gets the bag, decided when
    the config is composed and said on stderr; longer texts keep the transformer, and any encoder choice (encoder=,
    an encoder.* key) wins."""
    from multissl.cli import load_config
    from multissl.domains.text.domain import SHORT_TEXT_WORDS
    short = text_args(tmp_path, corpus)
    assert load_config([*short, "objective=byol"]).meta.encoder == "bag"
    assert "encoder=bag, domain=text's choice for this data: the texts are short" in capsys.readouterr().err
    for chosen in (["encoder=transformer"], ["encoder.depth=1"]):
        assert load_config([*short, *chosen]).meta.encoder == "transformer"
    words = " ".join(f"w{i}" for i in range(SHORT_TEXT_WORDS))
    lines = [words, f"{words} w{SHORT_TEXT_WORDS}", f"{words} x y"]  # a median of SHORT_TEXT_WORDS + 1 words
    (tmp_path / "long.txt").write_text("\n".join(lines), encoding="utf-8")
    long = text_args(tmp_path, tmp_path / "long.txt")
    assert load_config(long).meta.encoder == "transformer" and "choice" not in capsys.readouterr().err
    (tmp_path / "long.txt").write_text("\n".join([words, words, *lines]), encoding="utf-8")  # median: SHORT_TEXT_WORDS
    assert load_config(long).meta.encoder == "bag"


def test_a_continued_run_keeps_the_encoder_it_was_made_with(tmp_path, capsys, corpus):
    """Relaunching into a run folder, or trainer.resume=<folder>, continues that run: the encoder it was made with
    wins over the domain's choice for the data (which may differ after an upgrade), so its checkpoint fits."""
    from multissl.cli import load_config
    short = text_args(tmp_path, corpus)
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text("meta:\n  domain: text\n  encoder: transformer\n")
    for continued in (f"run.dir={old}", f"trainer.resume={old}"):
        assert load_config([*short, continued]).meta.encoder == "transformer"
    assert "choice" not in capsys.readouterr().err
    (old / "config.yaml").write_text("meta:\n  domain: text\n  encoder: bag\n")
    (tmp_path / "long.txt").write_text("\n".join(["many words " * 40] * 3), encoding="utf-8")  # the transformer's
    assert load_config([*text_args(tmp_path, tmp_path / "long.txt"), f"run.dir={old}"]).meta.encoder == "bag"
    assert f"encoder=bag, as the run in {old} that this command continues was made with it" in capsys.readouterr().err
    assert load_config([*short, f"run.dir={tmp_path / 'new'}"]).meta.encoder == "bag"
