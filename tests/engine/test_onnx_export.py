"""ONNX export: for every domain and every encoder class, onnxruntime gives the exported encoder's embeddings
within 1e-4 on held-out samples, at batch sizes other than the traced one; what runs beside the graph (text's
tokenizer, a table's encoding) is the domain's preprocess; bad requests are one line and leave no file."""
import json
import sys

import numpy as np
import pytest
import torch

import multissl
from multissl.cli import option_class, options
from multissl.contracts import Domain, optional
from multissl.data import collate_of
from multissl.errors import UserError
from multissl.export import main as export_main
from multissl.onnx_export import TOLERANCE, export_onnx, run_onnx

from tiny import TINY_ENCODER

pytest.importorskip("onnxruntime")
DOMAINS = options("domain")
SMALL = ("trainer.max_steps=1", "data.batch_size=4", "trainer.eval_samples=16")  # one step, scored on a few


def held_out(domain, n: int = 5):
    """The first n held-out samples as the graph takes them, and the exported encoder's embeddings of them."""
    split = domain.dataset("test") or domain.dataset("train")
    xs = [split[i]["x"] for i in range(min(n, len(split)))]
    raw = optional(domain, Domain, "eval_raw")
    if raw is not None:
        return {"x": torch.stack([raw(x) for x in xs])}
    x, pad = collate_of(domain)([domain.eval_input(x) for x in xs])
    return {"x": x} if pad is None else {"x": x, "pad": pad}


def assert_onnx_embeds_as_the_export(folder, file):
    exported = multissl.load_encoder(folder)
    domain = exported.domain
    feeds = held_out(domain)
    with torch.no_grad():  # the graph holds preprocess, or it runs beside the graph and made these inputs
        want = (exported.embed(feeds["x"]) if exported.meta["inputs"]["preprocess"]
                else (exported.encoder(feeds["x"]) if "pad" not in feeds
                      else exported.encoder(feeds["x"], pad=feeds["pad"]))[1]).numpy()
    for b in (len(want), 1):  # traced with two samples: other batch sizes run too
        got = run_onnx(file, {k: v[:b].numpy() for k, v in feeds.items()})
        assert got.shape == (b, exported.dim)
        np.testing.assert_allclose(got, want[:b], atol=TOLERANCE, rtol=0)
    return exported


@pytest.mark.parametrize("domain", DOMAINS)
def test_onnx_gives_the_embeddings_of_every_domain(tiny, domain):
    folder = tiny.run(f"domain={domain}", "objective=simclr", *SMALL)
    file = tiny.root / "out" / "encoder.onnx"
    export_main([str(folder), "--onnx", str(file)])
    exported = assert_onnx_embeds_as_the_export(folder, file)
    side = json.loads(file.with_suffix(".json").read_text())
    assert side["output"] == {"name": "representation", "dtype": "float32", "shape": ["batch", exported.dim]}
    assert side["preprocess"] == json.loads(json.dumps(exported.domain.state()))  # what runs beside the graph
    assert side["preprocess_in_graph"] == (optional(exported.domain, Domain, "eval_raw") is not None)


def encoder_classes():
    """One encoder option per class besides the transformer (every domain's test covers it): a class for every
    domain on the first domain it reads, one for some domains on each of them (its adapters)."""
    seen, out = {"multissl.encoder.Encoder"}, []
    for name in options("encoder"):
        cls = option_class("encoder", name)
        key = f"{cls.__module__}.{cls.__name__}"
        if key not in seen:
            seen.add(key)
            reads = getattr(cls, "domains", None)
            out += [(name, d) for d in (DOMAINS[:1] if not reads else [d for d in DOMAINS if d in reads])]
    return out


HEADS = "hidden_size:16,num_hidden_layers:1,num_attention_heads:2"
HF = {"text": ("encoder.config={model_type:bert,%s,intermediate_size:32}" % HEADS,),
      "video": ("encoder.config={model_type:videomae,%s,intermediate_size:32,image_size:32,patch_size:8,"
                "tubelet_size:2}" % HEADS,),
      "audio": ("domain.input=waveform", "encoder.config={model_type:wav2vec2,%s,intermediate_size:32,"
                "conv_dim:[8,8,8,8,8,8,8],num_conv_pos_embeddings:16,num_conv_pos_embedding_groups:2}" % HEADS)}


@pytest.mark.parametrize("encoder, domain", encoder_classes())
def test_onnx_gives_the_embeddings_of_every_encoder(tiny, encoder, domain):
    # the transformer's keys are bert's too; timm and hf name the architecture to build
    sizes = {"bert": TINY_ENCODER, "timm": ("encoder.name=resnet10t",), "hf": HF.get(domain)}.get(encoder, ())
    folder = tiny.run(f"domain={domain}", f"encoder={encoder}", "objective=simclr", *SMALL, *sizes, tiny_encoder=False)
    assert_onnx_embeds_as_the_export(folder, export_onnx(folder, tiny.root / "enc.onnx"))


def test_a_tables_encoding_beside_the_graph_gives_embed(tiny, mixed_table):
    """Categories, booleans and missing cells: the domain's preprocess of a DataFrame, fed to the graph, equals
    embed on the DataFrame."""
    import pandas as pd
    folder = tiny.run("domain=tabular", f"data.path={mixed_table}", "data.target=churned", *SMALL)
    file = export_onnx(folder, tiny.root / "table.onnx")
    rows = pd.read_csv(mixed_table).tail(7)
    assert rows.isna().any().any()
    exported = multissl.load_encoder(folder)
    got = run_onnx(file, {"x": exported.domain.preprocess(rows).numpy()})
    np.testing.assert_allclose(got, exported.embed(rows).numpy(), atol=TOLERANCE, rtol=0)


def test_texts_tokenized_beside_the_graph_give_embed(tiny):
    folder = tiny.run("domain=text", *SMALL)
    file = export_onnx(folder, tiny.root / "text.onnx")
    exported = multissl.load_encoder(folder)
    texts = ["hello there", "", "what is the meaning of a longer sentence than the others, with punctuation?"]
    x, pad = exported.domain.preprocess(texts)
    got = run_onnx(file, {"x": x.numpy(), "pad": pad.numpy()})
    np.testing.assert_allclose(got, exported.embed(texts).numpy(), atol=TOLERANCE, rtol=0)
    side = json.loads(file.with_suffix(".json").read_text())
    from tokenizers import Tokenizer  # the tokenizer a serving stack loads, from the file beside the graph
    tok = Tokenizer.from_str(side["preprocess"]["tokenizer"])
    assert tok.encode("hello there", add_special_tokens=False).ids == x[0][~pad[0]].tolist()


def test_bad_requests_are_one_line_and_leave_no_file(tiny, capsys, monkeypatch):
    folder = tiny.run(*SMALL)
    out = tiny.root / "out"
    capsys.readouterr()
    for argv, says in (([str(folder)], "expected <run> --onnx <file.onnx>"),
                       ([str(folder), "--onnx", str(out / "enc.txt")], "must end in .onnx"),
                       ([str(tiny.root / "nowhere"), "--onnx", str(out / "e.onnx")], "is not an exported encoder")):
        with pytest.raises(SystemExit) as e:
            export_main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and err.count("\n") == 1, err
    config = folder / "encoder" / "config.json"
    kept = config.read_text()
    config.write_text(json.dumps({k: v for k, v in json.loads(kept).items() if k != "inputs"}))  # an older export
    with pytest.raises(UserError, match="records no graph inputs"):
        export_onnx(folder, out / "e.onnx")
    config.write_text(kept)

    def fails(*args, **kwargs):
        raise RuntimeError("Unsupported operator: aten::something. More text")
    monkeypatch.setattr(torch.onnx, "export", fails)
    with pytest.raises(UserError, match=r"cannot export the encoder to ONNX \(Encoder\): Unsupported operator") as e:
        export_onnx(folder, out / "e.onnx")
    assert "\n" not in str(e.value)
    assert not out.exists() or not any(out.iterdir())
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if `pip install multissl` alone
    with pytest.raises(UserError, match=r"ONNX export needs the Python package 'onnxscript'.*multissl\[onnx\]"):
        export_onnx(folder, out / "e.onnx")
