"""encoder=bert: a transformers BERT from a config trains with every objective's step (every parameter learns, a
padded batch equals each text alone); a user's local checkpoint is the starting point of a run; the export writes
transformers' format that AutoModel / AutoTokenizer load to the same representation."""
import pytest
import torch
from safetensors.torch import load_file

import multissl
from multissl.errors import UserError
from multissl.train import build_domain, build_models

from texts import TOL, one_step_trains_every_parameter, padded_batch_equals_each_text_alone, text_args

transformers = pytest.importorskip("transformers")
BERT = ("encoder=bert", "encoder.dim=16", "encoder.depth=1", "encoder.heads=2")


@pytest.mark.parametrize("objective", ["mae", "simclr", "data2vec"])
def test_one_step_trains_every_bert_parameter(tiny, tmp_path, corpus, objective):
    one_step_trains_every_parameter(tiny.config(*text_args(tmp_path, corpus), *BERT, f"objective={objective}",
                                                "data.batch_size=8", tiny_encoder=False))


def test_a_padded_batch_equals_each_text_alone(tiny, tmp_path, corpus):
    cfg = tiny.config(*text_args(tmp_path, corpus), *BERT, "encoder.pool=mean", tiny_encoder=False)
    domain = build_domain(cfg)
    enc = build_models(cfg, domain)[0].eval()
    padded_batch_equals_each_text_alone(enc, domain, ["a cat", "the horse number 3 is odd and horses like it", "frog"])


def local_checkpoint(tmp_path, corpus) -> tuple:
    """A tiny BERT saved with save_pretrained next to the corpus tokenizer (what a user's checkpoint folder holds)."""
    from multissl.domains.text import TextDomain
    d = TextDomain(vocab_size=120, cache_dir=str(tmp_path / "cache"), data={"path": str(corpus)})
    d.dataset("train")
    cfg = transformers.BertConfig(vocab_size=d.vocab.size, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=48, max_position_embeddings=80)
    torch.manual_seed(0)
    folder = tmp_path / "my-bert"
    model = transformers.BertModel(cfg, add_pooling_layer=False)
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(d.vocab.json, encoding="utf-8")
    return folder, model


def test_a_local_checkpoint_is_where_pretraining_starts(tiny, tmp_path, corpus):
    folder, model = local_checkpoint(tmp_path, corpus)
    args = (*text_args(tmp_path, corpus), "encoder=bert", f"encoder.pretrained={folder}",
            f"domain.tokenizer_path={folder}", "objective=mae")
    run0 = tiny.run(*args, "trainer.max_steps=0", name="zero", tiny_encoder=False)
    exported = load_file(str(run0 / "encoder" / "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(exported[f"bert.{k}"], v), k  # the export of step 0 is the user's checkpoint
    assert multissl.load_encoder(run0).dim == 24  # the checkpoint's sizes win
    run2 = tiny.run(*args, "trainer.max_steps=2", name="two", tiny_encoder=False)
    moved = load_file(str(run2 / "encoder" / "model.safetensors"))
    assert any(not torch.equal(moved[f"bert.{k}"], v) for k, v in model.state_dict().items())
    with pytest.raises(UserError, match="comes with its own tokenizer; add domain.tokenizer_path") as e:
        tiny.run(*text_args(tmp_path, corpus), "encoder=bert", f"encoder.pretrained={folder}", "domain.vocab_size=100",
                 "trainer.max_steps=0", name="mismatch", tiny_encoder=False)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not a local transformers checkpoint"):
        tiny.run(*text_args(tmp_path, corpus), "encoder=bert", f"encoder.pretrained={tmp_path}", "trainer.max_steps=0",
                 name="none", tiny_encoder=False)


def test_save_pretrained_loads_in_transformers_to_the_same_representation(tiny, tmp_path, corpus):
    run = tiny.run(*text_args(tmp_path, corpus), *BERT, "objective=simclr", "trainer.max_steps=2", tiny_encoder=False)
    enc = multissl.load_encoder(run)
    enc.save_pretrained(tmp_path / "hf")
    model = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    texts = ["a cat number 1 is odd", "frog", "sheep like it and dogs like it too"]
    with torch.no_grad():
        theirs = model(**tok(texts, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
    torch.testing.assert_close(enc.embed(texts), theirs, atol=TOL, rtol=TOL)
    with pytest.raises(UserError, match="no transformers format; pretrain with encoder=bert"):
        multissl.load_encoder(tiny.run(*text_args(tmp_path, corpus), "trainer.max_steps=0", name="plain")) \
            .save_pretrained(tmp_path / "no")


def test_bert_refuses_other_domains(tiny):
    with pytest.raises(UserError, match="encoder=bert works with domain=text"):
        tiny.run("domain=image", "encoder=bert", "trainer.max_steps=0", tiny_encoder=False)
