"""The text domain end to end: the tokenizer is trained once, cached, and travels with checkpoints and the export
(so a resumed run keeps its ids); a padded batch gives each text what it gets alone; the export embeds a list of
strings; masked modeling is masked language modelling on the clean ids."""
import json

import pytest
import torch
import torch.nn.functional as F

import multissl
from multissl.checkpoint import load as load_checkpoint
from multissl.data import Collate, Views
from multissl.domains.text import TextDomain
from multissl.domains.text import tokenizer as tokenizer_module
from multissl.encoder import Encoder, gather_tokens
from multissl.errors import UserError
from multissl.objectives.mae import MAE

from texts import LINES, padded_batch_equals_each_text_alone


def text_domain(tmp_path, corpus, **kw):
    return TextDomain(**{"vocab_size": 120, **kw}, cache_dir=str(tmp_path / "cache"), data={"path": str(corpus)})


def test_the_tokenizer_is_trained_once_and_cached(tmp_path, corpus, monkeypatch):
    a = text_domain(tmp_path, corpus)
    a.dataset("train")
    assert len(list((tmp_path / "cache" / "text").glob("tokenizer-*.json"))) == 1
    monkeypatch.setattr(tokenizer_module, "build", lambda *a, **k: pytest.fail("trained again"))
    b = text_domain(tmp_path, corpus)
    b.dataset("train")
    assert b.vocab.json == a.vocab.json
    monkeypatch.undo()
    c = text_domain(tmp_path, corpus, vocab_size=100)  # other settings: another tokenizer
    c.dataset("train")
    assert len(list((tmp_path / "cache" / "text").glob("tokenizer-*.json"))) == 2


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_both_tokenizers_encode_words_and_keep_the_special_ids(tmp_path, corpus, kind):
    d = text_domain(tmp_path, corpus, tokenizer=kind)
    x = d.dataset("train")[0]["x"]
    assert x.shape[0] == 2 and x[1].max() >= 3  # several words
    v = d.vocab
    assert v.tok.id_to_token(v.pad_id) == "[PAD]" and v.tok.id_to_token(v.mask_id) == "[MASK]"
    assert v.special[[v.pad_id, v.mask_id, v.cls_id, v.sep_id]].all() and not v.special[x[0]].any()
    assert v.tok.decode(x[0].tolist()).replace(" ", "") == d.dataset("train").texts[0].replace(" ", "")


def test_a_users_tokenizer_json_is_used_and_a_bad_one_refused(tmp_path, corpus):
    own = text_domain(tmp_path, corpus, tokenizer="bpe")
    own.dataset("train")
    path = tmp_path / "tokenizer.json"
    path.write_text(own.vocab.json, encoding="utf-8")
    d = text_domain(tmp_path, corpus, tokenizer_path=str(path))
    d.dataset("train")
    assert d.vocab.json == own.vocab.json
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="domain.tokenizer_path=.*bad.json: cannot load") as e:
        text_domain(tmp_path, corpus, tokenizer_path=str(tmp_path / "bad.json")).dataset("train")
    assert "\n" not in str(e.value)
    from tokenizers import Tokenizer, models
    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(tmp_path / "nomask.json"))
    with pytest.raises(UserError, match="no pad token"):
        text_domain(tmp_path, corpus, tokenizer_path=str(tmp_path / "nomask.json")).dataset("train")


def test_long_texts_are_cut_to_max_length_and_counted(tmp_path, corpus, capsys):
    d = text_domain(tmp_path, corpus, max_length=5)
    assert max(v.shape[1] for v in d.dataset("train").x) == 5
    assert f"{len(LINES)} of {len(LINES)} texts are longer than domain.max_length=5" in capsys.readouterr().err


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_a_padded_batch_equals_each_text_alone(tmp_path, corpus, pool):
    torch.manual_seed(0)
    d = text_domain(tmp_path, corpus)
    d.dataset("train")
    enc = Encoder(d, dim=16, depth=2, heads=2, pool=pool).eval()
    texts = ["a cat", "the horse number 3 is odd and horses like it", "frog"]
    x, pad = d.preprocess(texts)
    assert pad.any() and x[pad].eq(d.vocab.pad_id).all()
    padded_batch_equals_each_text_alone(enc, d, texts)


def test_mae_on_text_is_masked_language_modelling_of_the_clean_ids(tmp_path, corpus):
    torch.manual_seed(0)
    d = text_domain(tmp_path, corpus)
    d.dataset("train")
    enc = Encoder(d, dim=16, depth=1, heads=2)
    mae = MAE(enc, d, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    items = [Views(d.dataset("train"), d, 3, 1, corrupt=True)[k] for k in range(8)]
    batch = Collate(d)(items)
    x, clean, masked = batch["views"][0], batch["clean"], batch["masked"]
    assert (masked >= 0).any() and (batch["keep"] < 0).any()  # keep: every real token, -1 past the end
    hit = gather_tokens(x[..., None], masked)[..., 0] != gather_tokens(clean[..., None], masked)[..., 0]
    assert hit[masked >= 0].float().mean() > 0.5  # most masked tokens are corrupted, [MASK] mostly
    assert torch.equal(x[batch["pad"][0]], clean[batch["pad"][0]])  # padding is never corrupted
    with torch.no_grad():
        pred, _ = mae.predict(enc, batch)
        loss = mae.reconstruction(pred, batch)
    assert pred.shape == (*masked.shape, d.target_dim)  # logits at the masked positions alone
    rows = [(i, k, j) for i in range(8) for k, j in enumerate(masked[i].tolist()) if j >= 0]
    ref = torch.stack([F.cross_entropy(pred[i, k][None], clean[i, j][None]) for i, k, j in rows]).mean()
    torch.testing.assert_close(loss, ref)


def test_the_tokenizer_travels_with_checkpoints_and_export_and_a_resume_keeps_it(tiny, tmp_path, corpus):
    args = ("domain=text", f"data.path={corpus}", "domain.vocab_size=120", f"domain.cache_dir={tmp_path / 'cache'}",
            "objective=simclr", "optim.warmup_steps=0", "optim.min_lr_ratio=1.0")
    folder = tiny.run(*args, "trainer.max_steps=2", name="split")
    saved = load_checkpoint(folder / "checkpoints" / "step_00000002.pt")["domain"]["tokenizer"]
    # the cache now holds another tokenizer under the same key (as a retrained one may): the run keeps its own
    (cached,) = (tmp_path / "cache" / "text").glob("tokenizer-*.json")
    other = TextDomain(vocab_size=60, cache_dir=str(tmp_path / "other"), data={"path": str(corpus)}, tokenizer="bpe")
    other.dataset("train")
    cached.write_text(other.vocab.json, encoding="utf-8")
    tiny.run(*args, "trainer.max_steps=4", name="split")
    meta = json.loads((folder / "encoder" / "config.json").read_text())
    assert meta["preprocess"]["tokenizer"] == saved
    enc = multissl.load_encoder(folder)
    out = enc.embed(["a cat number 1", "", "horses"])
    assert out.shape == (3, enc.dim) and torch.isfinite(out).all()
    with pytest.raises(UserError, match="list of strings"):
        enc.embed("one string")
