"""encoder=timm: a tiny ViT and a small ResNet built from timm configs and saved locally (a timm folder, a bare
weights file) load, train a step with an objective of each family, export, and embed as timm's own forward does on the
input normalised the weights' way; the first conv is adapted to gray images; freeze, lr_scale and layer_decay reach
the optimizer; a checkpoint of another architecture, a missing one, or a pickle that would run code is one line."""
import pickle
import shutil

import pytest
import timm
import torch

import multissl
from multissl.errors import UserError
from multissl.optim import param_groups
from multissl.testing import check_step
from multissl.train import build_domain, build_models
from multissl.train import run as train

from tiny import write_image_folder

VIT = dict(img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=2)
MEAN, STD = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)  # the weights' own statistics, unlike the domain's


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A timm folder (config.json + weights) of a tiny ViT with its own mean/std, a bare ResNet weights file, and
    16 px RGB photos."""
    root = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=5, **VIT)
    vit.pretrained_cfg = {**vit.pretrained_cfg, "mean": MEAN, "std": STD}
    timm.models.save_for_hf(vit, str(root / "vit"), model_args=VIT)
    net = timm.create_model("resnet10t", num_classes=7, zero_init_last=False)  # trained weights have no zero layer
    torch.save(net.state_dict(), root / "resnet10t.pth")
    return {"vit": root / "vit", "resnet": root / "resnet10t.pth", "photos": write_image_folder(root / "photos", 24, 8),
            "vit_model": vit.eval(), "resnet_model": net.eval()}


def config(tiny, saved, *args, name="run"):
    return tiny.config("encoder=timm", f"data.path={saved['photos']}", "domain.image_size=16", "data.batch_size=8",
                       *args, name=name, tiny_encoder=False)


def built(cfg):
    domain = build_domain(cfg)
    domain.dataset("train")
    return domain, *build_models(cfg, domain)


def own_forward(model, images, mean, std):
    """timm's forward on images in [0, 1] normalised as the weights expect: the pooled features before the head."""
    x = (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def test_a_timm_folder_embeds_as_timm_does_with_the_weights_own_normalisation(tiny, saved):
    cfg = config(tiny, saved, f"encoder.checkpoint={saved['vit']}", "domain.patch_size=4", "objective=simclr")
    domain, encoder, _ = built(cfg)
    assert encoder.dim == 24 and domain.mean != list(MEAN)
    images = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        ours = encoder.eval()(domain.preprocess(images))[1]
    torch.testing.assert_close(ours, own_forward(saved["vit_model"], images, MEAN, STD), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", ["simclr", "byol", "vicreg", "mae", "ibot", "data2vec"])
def test_one_step_of_each_family_trains_every_parameter(tiny, saved, objective):
    cfg = config(tiny, saved, f"encoder.checkpoint={saved['vit']}", "domain.patch_size=4", f"objective={objective}")
    assert check_step(cfg, build_domain(cfg))["parameters"] > 0


def test_a_run_exports_and_the_export_loads_without_the_checkpoint(tiny, saved, tmp_path):
    folder = shutil.copytree(saved["vit"], tmp_path / "vit")
    run = train(config(tiny, saved, f"encoder.checkpoint={folder}", "domain.patch_size=4", "objective=mae",
                       "trainer.max_steps=2"))
    shutil.rmtree(folder)  # the export holds the weights and the normalisation: it loads where the checkpoint is not
    exported = multissl.load_encoder(run)
    assert exported.meta["encoder"]["checkpoint"] is None and exported.meta["encoder"]["name"] == "vit_tiny_patch16_224"
    trained = timm.create_model("vit_tiny_patch16_224", num_classes=0, **VIT)
    trained.load_state_dict({k.removeprefix("model."): v for k, v in exported.encoder.state_dict().items()
                             if k.startswith("model.")})
    images = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(exported.embed(images), own_forward(trained.eval(), images, MEAN, STD),
                               atol=1e-5, rtol=1e-5)
    from multissl.onnx_export import export_onnx, run_onnx  # the same in a graph, normalisation inside
    raw = (images * 255).round().to(torch.uint8)
    graph = run_onnx(export_onnx(run, tmp_path / "vit.onnx"), {"x": raw.numpy()})
    torch.testing.assert_close(torch.from_numpy(graph), exported.embed(raw), atol=1e-4, rtol=0)


def test_a_weights_file_is_adapted_to_gray_images(tiny, saved):
    cfg = tiny.config("encoder=timm", "encoder.name=resnet10t", f"encoder.checkpoint={saved['resnet']}",
                      "data.batch_size=8", "objective=byol", tiny_encoder=False)  # the digits: one channel
    domain, encoder, _ = built(cfg)
    rgb = saved["resnet_model"].state_dict()["conv1.0.weight"]  # [out 3 k k]
    torch.testing.assert_close(encoder.model.state_dict()["conv1.0.weight"], rgb.sum(1, keepdim=True))
    mean = sum(timm.create_model("resnet10t").pretrained_cfg["mean"]) / 3
    std = sum(timm.create_model("resnet10t").pretrained_cfg["std"]) / 3
    torch.testing.assert_close(encoder.scale.flatten(), torch.tensor(domain.std) / std)
    torch.testing.assert_close(encoder.shift.flatten(), (torch.tensor(domain.mean) - mean) / std)
    assert check_step(cfg, domain)["parameters"] > 0


def test_freeze_lr_scale_and_layer_decay_reach_the_optimizer(tiny, saved):
    _, encoder, _ = built(config(tiny, saved, f"encoder.checkpoint={saved['vit']}", "encoder.freeze=all"))
    assert not any(p.requires_grad for p in encoder.parameters())
    _, encoder, _ = built(config(tiny, saved, "encoder.name=resnet10t", f"encoder.checkpoint={saved['resnet']}",
                                 "encoder.freeze=all"))
    norms = [m for m in encoder.train().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)  # frozen statistics too
    _, encoder, _ = built(config(tiny, saved, f"encoder.checkpoint={saved['vit']}", "encoder.freeze=1",
                                 "encoder.lr_scale=0.5", "encoder.layer_decay=0.1"))
    m = encoder.model
    assert not m.patch_embed.proj.weight.requires_grad and not m.pos_embed.requires_grad  # the stem: group 0
    assert all(p.requires_grad for p in m.blocks.parameters())
    scales = {round(g["lr_scale"], 6) for g in param_groups(encoder)}
    assert scales == {0.5 * 0.1, 0.5}  # block 0; block 1 with the final norm (timm's last layer group)


def test_bad_checkpoints_are_one_line_and_a_pickle_runs_no_code(tiny, saved, tmp_path):
    cases = [(f"encoder.checkpoint={saved['resnet']}", "encoder.name=vit_tiny_patch16_224",
              "does not fit vit_tiny_patch16_224"),
             (f"encoder.checkpoint={tmp_path / 'nowhere.pth'}", "encoder.name=resnet10t", "does not exist"),
             (f"encoder.checkpoint={saved['resnet']}", "encoder.name=null", "set encoder.name"),
             ("encoder.name=null", "encoder.checkpoint=null", "needs encoder.name")]
    for *args, expected in cases:
        with pytest.raises(UserError, match=expected) as e:
            built(config(tiny, saved, *args))
        assert "\n" not in str(e.value)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"conv1.weight": Payload()}, protocol=2))
    with pytest.raises(UserError, match="cannot read encoder.checkpoint"):
        built(config(tiny, saved, f"encoder.checkpoint={tmp_path / 'evil.pth'}", "encoder.name=resnet10t"))
    assert not marker.exists()


def test_masking_needs_a_vit_with_the_domains_patch(tiny, saved):
    for args, expected in ((("encoder.name=resnet10t",), "it is not a ViT"),
                           ((f"encoder.checkpoint={saved['vit']}", "domain.patch_size=8"), "domain.patch_size=4")):
        cfg = config(tiny, saved, *args, "objective=mae", "trainer.max_steps=1")
        with pytest.raises(UserError, match=expected) as e:
            check_step(cfg, build_domain(cfg))
        assert "\n" not in str(e.value)
