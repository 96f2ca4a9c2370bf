"""encoder=hf (text): tiny BERT, RoBERTa and DistilBERT models built from transformers configs and saved next to the
corpus tokenizer load, train a step with an objective of each family, export, and embed as the library's own forward
on [CLS] + the text's ids; a padded batch gives each text what it gets alone; tokens a masked objective drops keep
the others' positions; the export loads without the folder; freeze / lr_scale / layer_decay reach the optimizer."""
import shutil

import pytest
import torch

import multissl
from multissl.domains.text import TextDomain
from multissl.errors import UserError
from multissl.optim import param_groups
from multissl.train import build_domain, build_models

from texts import TOL, one_step_trains_every_parameter, padded_batch_equals_each_text_alone, text_args

transformers = pytest.importorskip("transformers")
FAMILIES = ("bert", "roberta", "distilbert")


def saved_model(tmp_path, corpus, family: str):
    """A tiny model of the family saved with save_pretrained, the corpus tokenizer beside it."""
    d = TextDomain(vocab_size=120, cache_dir=str(tmp_path / "cache"), data={"path": str(corpus)})
    d.dataset("train")
    v = d.vocab
    sizes = dict(vocab_size=v.size, pad_token_id=v.pad_id)
    cfg = {"bert": lambda: transformers.BertConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                                                   intermediate_size=48, max_position_embeddings=80, **sizes),
           "roberta": lambda: transformers.RobertaConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                                                         intermediate_size=48, max_position_embeddings=80 + v.pad_id,
                                                         **sizes),
           "distilbert": lambda: transformers.DistilBertConfig(dim=24, n_layers=2, n_heads=2, hidden_dim=48,
                                                               max_position_embeddings=80, **sizes)}[family]()
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(cfg).eval()
    folder = tmp_path / family
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(v.json, encoding="utf-8")
    return folder, model


def args(tmp_path, corpus, folder, *more):
    return (*text_args(tmp_path, corpus), "encoder=hf", f"encoder.pretrained={folder}",
            f"domain.tokenizer_path={folder}", *more)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_embeds_as_its_own_forward_and_pads_per_text(tiny, tmp_path, corpus, family):
    folder, model = saved_model(tmp_path, corpus, family)
    cfg = tiny.config(*args(tmp_path, corpus, folder), tiny_encoder=False)
    domain = build_domain(cfg)
    enc = build_models(cfg, domain)[0].eval()
    texts = ["a cat", "the horse number 3 is odd and horses like it", "frog"]
    x, pad = domain.preprocess(texts)
    with torch.no_grad():
        for i, t in enumerate(texts):  # [CLS] + the text's ids, alone: what a user feeding the model gets
            ids = torch.tensor([[domain.vocab.cls_id, *x[i][~pad[i]].tolist()]])
            own = model(input_ids=ids).last_hidden_state[0, 0]
            torch.testing.assert_close(enc(x[i:i + 1][:, ~pad[i]])[1][0], own, atol=TOL, rtol=TOL)
    padded_batch_equals_each_text_alone(enc, domain, texts)


@pytest.mark.parametrize("family, objective", [("roberta", "mae"), ("roberta", "simclr"), ("distilbert", "byol"),
                                               ("bert", "vicreg"), ("roberta", "data2vec")])
def test_one_step_of_each_family_trains_every_parameter(tiny, tmp_path, corpus, family, objective):
    folder, _ = saved_model(tmp_path, corpus, family)
    one_step_trains_every_parameter(tiny.config(*args(tmp_path, corpus, folder), f"objective={objective}",
                                                "data.batch_size=8", tiny_encoder=False))


def test_tokens_left_out_keep_the_positions_of_the_others(tiny, tmp_path, corpus):
    folder, _ = saved_model(tmp_path, corpus, "roberta")
    cfg = tiny.config(*args(tmp_path, corpus, folder), tiny_encoder=False)
    domain = build_domain(cfg)
    enc = build_models(cfg, domain)[0].eval()
    x, _ = domain.preprocess(["the horse number 3 is odd and horses like it"])
    keep = torch.tensor([[0, 2, 5]])
    with torch.no_grad():
        kept, _ = enc(x, keep=keep)
        # the reference: the other tokens hidden from attention by hand, the model's own positions
        ids = torch.cat([torch.tensor([[domain.vocab.cls_id]]), x], 1)
        att = torch.zeros_like(ids)
        att[0, [0, 1, 3, 6]] = 1
        h = enc.model(input_ids=ids, attention_mask=att).last_hidden_state
    torch.testing.assert_close(kept[0], h[0, [1, 3, 6]], atol=TOL, rtol=TOL)


def test_a_run_exports_and_the_export_loads_without_the_folder(tiny, tmp_path, corpus):
    folder, _ = saved_model(tmp_path, corpus, "roberta")
    run = tiny.run(*args(tmp_path, corpus, folder), "objective=mae", "trainer.max_steps=2", tiny_encoder=False)
    shutil.rmtree(folder)
    exported = multissl.load_encoder(run)
    assert exported.meta["encoder"]["pretrained"] is None and exported.meta["encoder"]["config"]["model_type"] == \
        "roberta"
    texts = ["a cat", "frog and dog"]
    x, pad = exported.domain.preprocess(texts)
    with torch.no_grad():
        torch.testing.assert_close(exported.embed(texts), exported.encoder(x, pad=pad)[1])
        ids = torch.tensor([[exported.domain.vocab.cls_id, *x[0][~pad[0]].tolist()]])
        torch.testing.assert_close(exported.embed(texts[:1])[0],
                                   exported.encoder.model(input_ids=ids).last_hidden_state[0, 0], atol=TOL, rtol=TOL)
    exported.save_pretrained(tmp_path / "back")  # transformers' own format again, the tokenizer included
    model = transformers.AutoModel.from_pretrained(tmp_path / "back").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    with torch.no_grad():
        theirs = model(**tok(texts[:1], return_tensors="pt")).last_hidden_state[0, 0]
    torch.testing.assert_close(exported.embed(texts[:1])[0], theirs, atol=TOL, rtol=TOL)


def test_freeze_lr_scale_and_layer_decay_reach_the_optimizer(tiny, tmp_path, corpus):
    folder, _ = saved_model(tmp_path, corpus, "bert")
    cfg = tiny.config(*args(tmp_path, corpus, folder, "encoder.freeze=1", "encoder.lr_scale=0.5",
                            "encoder.layer_decay=0.1"), tiny_encoder=False)
    enc = build_models(cfg, build_domain(cfg))[0]
    assert not any(p.requires_grad for p in enc.model.embeddings.parameters())
    assert all(p.requires_grad for p in enc.model.encoder.parameters())
    assert {round(g["lr_scale"], 6) for g in param_groups(enc)} == {0.5 * 0.1, 0.5}  # layer 0, layer 1


def test_bad_folders_and_sizes_are_one_line(tiny, tmp_path, corpus):
    folder, _ = saved_model(tmp_path, corpus, "roberta")
    for more, expected in ((("domain.max_length=200",), "set domain.max_length"),
                           (("domain.max_length=79",), "cannot read 80 tokens"),  # RoBERTa counts from its pad id
                           (("encoder.pretrained=null",), "needs encoder.pretrained"),
                           ((f"encoder.pretrained={tmp_path}",), "not a local transformers checkpoint")):
        with pytest.raises(UserError, match=expected) as e:
            cfg = tiny.config(*args(tmp_path, corpus, folder, *more), tiny_encoder=False)
            build_models(cfg, build_domain(cfg))
        assert "\n" not in str(e.value)
