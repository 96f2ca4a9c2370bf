"""encoder=hf on clips: a tiny VideoMAE built from its transformers config and saved with its own image statistics
embeds as its own forward on the clip normalised its way (gray frames repeated to its three channels), trains a step
with an objective of each family, takes a masked objective's kept tubelets in their order, exports, loads without
the folder and writes transformers' format back with its own statistics; clips of another shape than the model's are
one line naming the settings."""
import json
import shutil

import pytest
import torch

import multissl
from multissl.errors import UserError
from multissl.testing import check_step
from multissl.train import build_domain, build_models
from multissl.train import run as train


transformers = pytest.importorskip("transformers")
MEAN, STD = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def videomae(tmp_path_factory):
    """8 frames of 32 px in tubelets [2 8 8], as the default clips are cut; its processor's own mean and std."""
    folder = tmp_path_factory.mktemp("hf") / "videomae"
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_channels=3, num_frames=8, tubelet_size=2,
                                      hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(cfg).eval()
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    return folder, model


def config(tiny, folder, *more, name="run"):
    return tiny.config("domain=video", "encoder=hf", f"encoder.pretrained={folder}", "data.batch_size=8", *more,
                       name=name, tiny_encoder=False)


def their_input(x, domain):
    """A clip [b c t h w] as the domain standardises it -> [b t 3 h w] as the model expects: back to [0, 1],
    repeated to RGB, normalised with the model's statistics."""
    view = (1, -1, 1, 1, 1)
    raw = x * torch.tensor(domain.std).view(view) + torch.tensor(domain.mean).view(view)
    rgb = (raw.expand(-1, 3, -1, -1, -1) - torch.tensor(MEAN).view(view)) / torch.tensor(STD).view(view)
    return rgb.transpose(1, 2)


def own(model, x, domain):
    with torch.no_grad():
        return model(pixel_values=their_input(x, domain)).last_hidden_state


def test_a_videomae_embeds_as_its_own_forward_on_clips_normalised_its_way(tiny, videomae):
    folder, model = videomae
    cfg = config(tiny, folder)
    domain = build_domain(cfg)
    domain.dataset("train")
    enc = build_models(cfg, domain)[0].eval()
    x = torch.stack([domain.eval_input(domain.dataset("train")[i]["x"]) for i in range(3)])  # [b 1 t h w], gray
    ref = own(model, x, domain)
    with torch.no_grad():
        tokens, pooled = enc(x)
        torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pooled, ref.mean(1), atol=1e-5, rtol=1e-5)
        keep = torch.tensor([[5, 0, 17, 3]] * 3)  # any order: tokens come back in keep's
        kept, _ = enc(x, keep=keep)
        hidden = torch.ones(3, 64, dtype=torch.bool)
        hidden[:, [0, 3, 5, 17]] = False
        sorted_out = model(pixel_values=their_input(x, domain), bool_masked_pos=hidden).last_hidden_state  # 0 3 5 17
    torch.testing.assert_close(kept, sorted_out[:, [2, 0, 3, 1]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", ["simclr", "byol", "vicreg", "mae"])
def test_one_step_of_each_family_trains_every_parameter(tiny, videomae, objective):
    cfg = config(tiny, videomae[0], f"objective={objective}")
    assert check_step(cfg, build_domain(cfg))["parameters"] > 0


def test_a_run_exports_and_the_export_loads_without_the_folder(tiny, videomae, tmp_path):
    folder = shutil.copytree(videomae[0], tmp_path / "copy")
    run = train(config(tiny, folder, "objective=mae", "trainer.max_steps=2"))
    shutil.rmtree(folder)
    exported = multissl.load_encoder(run)
    assert exported.meta["encoder"]["config"]["model_type"] == "videomae"
    x = torch.rand(2, 8, 1, 32, 32)  # [b t c h w] frames in [0, 1], as a user holds them
    with torch.no_grad():
        inputs = exported.domain.preprocess(x)
        torch.testing.assert_close(exported.embed(x), exported.encoder(inputs)[1])
        model = exported.encoder.model  # the trained weights, the model's own forward: the normalisation travelled
        torch.testing.assert_close(exported.encoder(inputs)[0], own(model, inputs, exported.domain), atol=1e-5,
                                   rtol=1e-5)
    exported.save_pretrained(tmp_path / "back")  # transformers' format: the model and its own statistics
    assert transformers.AutoImageProcessor.from_pretrained(tmp_path / "back").image_mean == pytest.approx(MEAN)
    model = transformers.AutoModel.from_pretrained(tmp_path / "back").eval()
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "back")
    frames = [f.expand(3, -1, -1).permute(1, 2, 0).numpy() for f in x[0]]  # one clip, RGB [h w 3] frames in [0, 1]
    pixels = processor(frames, do_rescale=False, return_tensors="pt")["pixel_values"]  # [1 t 3 h w]
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixels).last_hidden_state.mean(1), exported.embed(x[:1]),
                                   atol=1e-4, rtol=1e-4)


def test_clips_of_another_shape_are_one_line_naming_the_settings(tiny, videomae):
    with pytest.raises(UserError, match=r"set domain.frames=8 domain.size=32 domain.tubelet=\[2, 8, 8\]") as e:
        cfg = config(tiny, videomae[0], "domain.frames=4")
        build_models(cfg, build_domain(cfg))
    assert "\n" not in str(e.value)
