"""encoder=hf on audio: tiny wav2vec 2.0, HuBERT and AST models built from their transformers configs and saved with
their feature extractors embed as their own forward on what their own feature extractor makes of the waveform; kept
frames or columns come back in keep's order; one step of each objective family trains; a run exports, loads without
the folder, gives ONNX the same embeddings and writes transformers' format back; an AST built for longer clips has its positions cut to the run's;
settings that do not fit the model, and a checkpoint missing weights, are one line naming the fix."""
import json
import shutil

import numpy as np
import pytest
import torch

from omegaconf import OmegaConf

import multissl
from multissl.build import refuse_incompatible
from multissl.domains.audio import AudioDomain
from multissl.errors import UserError
from multissl.finetune import layer_group
from multissl.onnx_export import TOLERANCE, export_onnx, run_onnx
from multissl.testing import check_step, first_step
from multissl.train import build_domain, build_models
from multissl.train import run as train

transformers = pytest.importorskip("transformers")
SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
WAVE = dict(conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **SMALL)
AST_FRAME = "domain.frame=[2800, 1600]"  # AST's columns: 16 filterbank frames every 10, at 16 kHz


def saved(folder, model, extractor):
    model.eval().save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder, model, extractor


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """wav2vec 2.0 (its extractor standardizes each clip), HuBERT (it does not), and two ASTs with 32 mel bins: one
    for 1-s clips (98 filterbank frames), one for 2-s clips; each as save_pretrained writes it."""
    root = tmp_path_factory.mktemp("hf_audio")
    torch.manual_seed(0)
    wave_fe = transformers.Wav2Vec2FeatureExtractor
    ast_fe = transformers.ASTFeatureExtractor
    return {
        "wav2vec2": saved(root / "wav2vec2", transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**WAVE)),
                          wave_fe(do_normalize=True)),
        "hubert": saved(root / "hubert", transformers.HubertModel(transformers.HubertConfig(**WAVE)),
                        wave_fe(do_normalize=False)),
        "ast": saved(root / "ast", transformers.ASTModel(transformers.ASTConfig(num_mel_bins=32, max_length=98,
                                                                                 **SMALL)),
                     ast_fe(num_mel_bins=32, max_length=98, mean=-3.0, std=2.5)),
        "ast_2s": saved(root / "ast_2s", transformers.ASTModel(transformers.ASTConfig(num_mel_bins=32, max_length=198,
                                                                                    **SMALL)),
                        ast_fe(num_mel_bins=32, max_length=198)),
    }


def config(tiny, folder, *more, name="run"):
    frame = (AST_FRAME,) if "ast" in str(folder) else ()
    return tiny.config("domain=audio", "domain.input=waveform", *frame, "encoder=hf", f"encoder.pretrained={folder}",
                       "data.batch_size=8", *more, name=name, tiny_encoder=False)


DOMAINS = {}  # one domain (its data loaded) per set of domain settings, for the whole module


def encoder(tiny, folder, *more):
    cfg = config(tiny, folder, *more)
    key = json.dumps(OmegaConf.to_container(cfg.domain), sort_keys=True)
    if key not in DOMAINS:
        DOMAINS[key] = build_domain(cfg)
        DOMAINS[key].dataset("train")
    return build_models(cfg, DOMAINS[key])[0].eval(), DOMAINS[key]


def unloaded(tiny, folder, *more):
    """The encoder of a config on its domain without data (its checks read the domain's settings alone)."""
    cfg = config(tiny, folder, *more)
    refuse_incompatible(cfg)
    settings = OmegaConf.to_container(cfg.domain)
    settings.pop("_target_")
    return build_models(cfg, AudioDomain(**settings))[0]


def clips(domain, n=3):
    return torch.stack([domain.eval_input(domain.dataset("train")[i]["x"]) for i in range(n)])  # [b 1 samples]


def own(model, extractor, x):
    """The model's own forward on what its own feature extractor makes of the waveforms x [b 1 samples]."""
    inputs = extractor([w[0].numpy() for w in x], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "attention_mask"})


@pytest.mark.parametrize("name", ["wav2vec2", "hubert"])
def test_a_speech_model_embeds_as_its_own_forward(tiny, models, name):
    folder, model, extractor = models[name]
    enc, domain = encoder(tiny, folder)
    x = clips(domain)
    ref = own(model, extractor, x).last_hidden_state  # [b 49 d]
    with torch.no_grad():
        tokens, pooled = enc(x)
        torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pooled, ref.mean(1), atol=1e-5, rtol=1e-5)
        keep = torch.tensor([[7, 0, 30, 2]] * 3)  # any order: the kept frames come back in keep's
        kept, _ = enc(x, keep=keep)
        hidden = torch.ones(3, 49, dtype=torch.bool)
        hidden[:, [0, 2, 7, 30]] = False
        inputs = extractor([w[0].numpy() for w in x], sampling_rate=16000, return_tensors="pt")["input_values"]
        masked = model(input_values=inputs, mask_time_indices=hidden).last_hidden_state  # its own mask embedding
    torch.testing.assert_close(kept, masked[:, [7, 0, 30, 2]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type, standardized", [("wavlm", False), ("data2vec-audio", True)])
def test_the_other_speech_families_embed_and_mask_as_their_own_forward(model_type, standardized):
    """Without a feature extractor's word, clips are standardized for models whose convolutions are layer-normed
    (data2vec-audio's always are) and not for group-normed ones (WavLM's default), as their extractors do."""
    from multissl.domains.hf import HFEncoder
    torch.manual_seed(0)
    enc = HFEncoder(AudioDomain(input="waveform"), config={"model_type": model_type, **WAVE}).eval()
    x = torch.randn(2, 1, 16000) * 0.1
    with torch.no_grad():
        w = x[:, 0]
        if standardized:
            w = (w - w.mean(-1, keepdim=True)) / (w.var(-1, keepdim=True, unbiased=False) + 1e-7).sqrt()
        hidden = torch.ones(2, 49, dtype=torch.bool)
        hidden[:, [3, 10]] = False
        ref = enc.model(input_values=w, mask_time_indices=hidden).last_hidden_state
        torch.testing.assert_close(enc(x, keep=torch.tensor([[10, 3]] * 2))[0], ref[:, [10, 3]])


def test_an_ast_embeds_as_its_own_forward_on_its_own_filterbank(tiny, models):
    folder, model, extractor = models["ast"]
    enc, domain = encoder(tiny, folder)
    x = clips(domain)
    ref = own(model, extractor, x)
    with torch.no_grad():
        tokens, pooled = enc(x)
        torch.testing.assert_close(pooled, ref.pooler_output, atol=1e-4, rtol=1e-4)
        columns = ref.last_hidden_state[:, 2:].reshape(3, 2, 9, -1).mean(1)  # [b 9 d]: 2 frequency rows of patches
        torch.testing.assert_close(tokens, columns, atol=1e-4, rtol=1e-4)
        back = torch.arange(8, -1, -1).expand(3, -1)  # every column, reversed: the same tokens, reversed
        torch.testing.assert_close(enc(x, keep=back)[0], tokens.flip(1), atol=1e-5, rtol=1e-5)
        assert enc(x, keep=back[:, :4])[0].shape == (3, 4, 16)


def test_an_ast_for_longer_clips_takes_its_centre_positions(tiny, models, capsys):
    folder, model, _ = models["ast_2s"]  # 19 columns of positions; a 1-s clip has 9
    enc, domain = encoder(tiny, folder)
    assert "AST built for 198 filterbank frames (19 time columns) reads clips of 98 (9): its time positions cut to " \
           "the centre ones" in capsys.readouterr().out
    table = model.embeddings.position_embeddings.detach()
    grid = table[:, 2:].reshape(1, 2, 19, -1)[:, :, 5:14]
    torch.testing.assert_close(enc.model.embeddings.position_embeddings[:, 2:].reshape(1, 2, 9, -1), grid)
    assert enc.model.config.max_length == 98 and enc(clips(domain))[0].shape == (3, 9, 16)


@pytest.mark.parametrize("name, objective", [("wav2vec2", "simclr"), ("wav2vec2", "byol"), ("wav2vec2", "mae"),
                                             ("hubert", "vicreg"), ("hubert", "data2vec"), ("ast", "simclr"),
                                             ("ast", "mae")])
def test_one_step_of_each_family_trains(tiny, models, name, objective):
    cfg = config(tiny, models[name][0], f"objective={objective}")
    domain = build_domain(cfg)
    if name != "ast" and objective not in ("mae", "data2vec"):  # the mask embedding learns under masks alone
        model = first_step(cfg, domain)[0]
        grads = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
        unused = grads.pop("encoder.model.masked_spec_embed")
        assert unused is None or not unused.any()
        assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    else:
        assert check_step(cfg, domain)["parameters"] > 0


def test_a_speech_model_teaches_the_default_student(tiny, models):
    cfg = tiny.config("domain=audio", "domain.input=waveform", "objective=distill",
                      f"objective.teacher={models['hubert'][0]}", "data.batch_size=8")
    assert check_step(cfg, build_domain(cfg))["parameters"] > 0


@pytest.mark.parametrize("name", ["wav2vec2", "ast_2s"])
def test_a_run_exports_loads_without_the_folder_and_writes_transformers_format(tiny, models, tmp_path, name):
    folder = shutil.copytree(models[name][0], tmp_path / name)
    run = train(config(tiny, folder, "objective=mae", "trainer.max_steps=2", "trainer.eval_samples=16"))
    shutil.rmtree(folder)
    exported = multissl.load_encoder(run)
    x = torch.randn(2, 12000) * 0.1  # waveforms as a user holds them, shorter than the clip
    with torch.no_grad():
        inputs = exported.domain.preprocess(x)
        want = exported.embed(x)
        torch.testing.assert_close(want, exported.encoder(inputs)[1])
        if name == "wav2vec2":  # the per-clip standardization travelled: the trained model's own forward
            z = (inputs[:, 0] - inputs[:, 0].mean(-1, keepdim=True)) / (inputs[:, 0].var(-1, keepdim=True,
                                                                                          unbiased=False) + 1e-7).sqrt()
            torch.testing.assert_close(exported.encoder.model(input_values=z).last_hidden_state.mean(1), want)
        else:
            assert exported.meta["encoder"]["config"]["max_length"] == 98
    if name == "ast_2s":  # its filterbank in the graph (tests/engine/test_onnx_export.py covers wav2vec 2.0's)
        file = export_onnx(run, tmp_path / "audio.onnx")  # the graph takes clip-length waveforms
        np.testing.assert_allclose(run_onnx(file, {"x": inputs[:, 0].numpy()}), want.numpy(), atol=TOLERANCE, rtol=0)
    exported.save_pretrained(tmp_path / "back")  # transformers' format, with the feature extractor
    model = transformers.AutoModel.from_pretrained(tmp_path / "back").eval()
    out = own(model, transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "back"), inputs)
    torch.testing.assert_close(out.last_hidden_state.mean(1) if name == "wav2vec2" else out.pooler_output, want,
                               atol=1e-4, rtol=1e-4)


def test_speech_model_layer_groups_start_at_its_feature_encoder():
    assert layer_group("feature_extractor.conv_layers.3.conv.weight") == 0
    assert layer_group("encoder.pos_conv_embed.conv.bias") == 0 and layer_group("masked_spec_embed") == 0
    assert layer_group("encoder.layers.1.attention.q_proj.weight") == 2


def test_settings_that_do_not_fit_the_model_are_one_line(tiny, models, tmp_path, capsys):
    wave = models["wav2vec2"][0]
    cases = [(("domain.input=logmel",), wave, "set domain.input=waveform"),
             (("domain.frame=[400, 160]",), wave, r"set domain.frame=\[400, 320\]"),
             (("domain.sample_rate=8000",), wave, "set domain.sample_rate=16000"),
             (("domain.frame=[400, 320]",), models["ast"][0], r"set domain.frame=\[2800, 1600\]"),
             (("objective=ibot",), wave, "objective=ibot gives the encoder mask tokens, which encoder=hf does not")]
    bert = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(vocab_size=50, **SMALL)).save_pretrained(bert)
    cases.append(((), bert, "holds a bert model"))
    from safetensors.torch import load_file, save_file
    part = shutil.copytree(wave, tmp_path / "part")  # a checkpoint without one of its tensors: never half-random
    weights = load_file(part / "model.safetensors")
    weights.pop("encoder.layers.1.attention.q_proj.weight")
    save_file(weights, part / "model.safetensors", metadata={"format": "pt"})
    cases.append(((), part, r"lacks 1 weights of its wav2vec2 model \(encoder.layers.1.attention.q_proj.weight\)"))
    for more, folder, says in cases:
        with pytest.raises(UserError, match=says) as e:
            unloaded(tiny, folder, *more)
        assert "\n" not in str(e.value)
    weights.pop("encoder.layer_norm.weight")  # a normalization alone missing: it starts as the identity, said
    weights["encoder.layers.1.attention.q_proj.weight"] = load_file(wave / "model.safetensors")[
        "encoder.layers.1.attention.q_proj.weight"]
    save_file(weights, part / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()
    assert torch.equal(unloaded(tiny, part).model.encoder.layer_norm.weight, torch.ones(16))
    assert "has no encoder.layer_norm.weight: that normalization starts as the identity" in capsys.readouterr().out
