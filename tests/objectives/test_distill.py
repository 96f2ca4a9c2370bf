"""Distillation: the loss against numpy, the teacher frozen (no gradient, eval mode, weights unchanged by training),
a teacher read from an exported encoder (its targets are that encoder's representations), one-line errors for a
teacher of another domain or that cannot read the views, and a run from an exported teacher that resumes exactly."""
import numpy as np
import pytest
import torch

import multissl
from multissl.checkpoint import latest_state
from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.distill import Distill, distill_loss
from tiny import write_image_folder


CONSTANT = ("optim.warmup_steps=0", "optim.min_lr_ratio=1.0")  # the split run changes max_steps


def reference(s, t):
    """mean over rows of 1 - <s, t> / (|s| |t|), by loops in float64."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    return float(np.mean([1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(s, t)]))


def test_loss_matches_the_reference_and_its_bounds():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    assert distill_loss(s, t).item() == pytest.approx(reference(s, t), abs=1e-12)
    assert distill_loss(t, 3 * t).item() == pytest.approx(0, abs=1e-12)  # scale does not matter
    assert distill_loss(-t, t).item() == pytest.approx(2, abs=1e-12)
    s.requires_grad_(True)
    t.requires_grad_(True)
    distill_loss(s, t).backward()
    assert t.grad is None and s.grad.abs().sum() > 0  # the teacher's side is a target


def tiny_setup(**kw):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return d, enc, Distill(enc, d, projector=(32,), **kw)


def test_the_random_teacher_is_frozen_and_never_changes():
    d, enc, obj = tiny_setup()
    before = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    assert all(not p.requires_grad for p in obj.teacher.parameters())
    for k, v in obj.teacher.state_dict().items():  # starts as the student's initial weights
        torch.testing.assert_close(v, enc.state_dict()[k])
    params = [p for p in [*enc.parameters(), *obj.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    obj.train()
    assert not obj.teacher.training  # dropout off, whatever the engine sets
    for _ in range(3):
        views = [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)]
        loss, logs = obj(enc, {"views": views}, {})
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert logs["rep"].shape == (8, 16) and 0 <= loss.item() <= 2
    for k, v in obj.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, obj.teacher.state_dict()[k]) for k, v in enc.state_dict().items())


def test_an_exported_teacher_gives_its_representations_as_targets(tiny):
    teacher = tiny.run("trainer.max_steps=2", "encoder.dim=24", name="teacher")  # wider than the student
    exported = multissl.load_encoder(teacher)
    cfg = tiny.config("objective=distill", f"objective.teacher={teacher}", "trainer.max_steps=1")
    from multissl.train import build_domain, build_models
    domain = build_domain(cfg)
    domain.dataset("train")
    encoder, objective = build_models(cfg, domain)
    assert objective.teacher.dim == 24 and objective.projector[-1].out_features == 24
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(objective.targets([x], None)[0], exported.encoder(x)[1])


def test_a_timm_folder_teaches_as_timm_embeds_the_images_normalised_its_way(tiny):
    import timm
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=16, patch_size=4, embed_dim=24, depth=2,
                            num_heads=2).eval()
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    vit.pretrained_cfg = {**vit.pretrained_cfg, "mean": mean, "std": std}
    timm.models.save_for_hf(vit, str(tiny.root / "vit"))
    photos = write_image_folder(tiny.root / "photos", 12, 6)
    cfg = tiny.config("objective=distill", f"objective.teacher={tiny.root / 'vit'}", f"data.path={photos}",
                      "domain.image_size=16", "data.batch_size=6")
    from multissl.train import build_domain, build_models
    domain = build_domain(cfg)
    domain.dataset("train")
    objective = build_models(cfg, domain)[1]
    images = torch.rand(3, 3, 16, 16)
    x = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(objective.targets([domain.preprocess(images)], None)[0],
                                   vit.forward_head(vit.forward_features(x), pre_logits=True), atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in objective.teacher.parameters())


def test_a_transformers_folder_teaches_text_as_its_own_forward(tiny, tmp_path):
    import transformers
    from texts import text_args, write_corpus
    from multissl.domains.text import TextDomain
    corpus = write_corpus(tmp_path)
    d = TextDomain(vocab_size=120, cache_dir=str(tmp_path / "cache"), data={"path": str(corpus)})
    d.dataset("train")
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(transformers.RobertaConfig(
        vocab_size=d.vocab.size, pad_token_id=d.vocab.pad_id, hidden_size=24, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=48, max_position_embeddings=80 + d.vocab.pad_id)).eval()
    model.save_pretrained(tmp_path / "roberta")
    (tmp_path / "roberta" / "tokenizer.json").write_text(d.vocab.json, encoding="utf-8")
    cfg = tiny.config(*text_args(tmp_path, corpus), f"domain.tokenizer_path={tmp_path / 'roberta'}",
                      "objective=distill", f"objective.teacher={tmp_path / 'roberta'}")
    from multissl.train import build_domain, build_models
    domain = build_domain(cfg)
    objective = build_models(cfg, domain)[1]
    x, pad = domain.preprocess(["a cat", "frog and dog"])
    ids = torch.tensor([[domain.vocab.cls_id, *x[0][~pad[0]].tolist()]])
    with torch.no_grad():
        torch.testing.assert_close(objective.targets([x], [pad])[0][0], model(input_ids=ids).last_hidden_state[0, 0],
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="is a model encoder=hf reads, which takes domain text or video or audio") as e:
        tiny.run("objective=distill", f"objective.teacher={tmp_path / 'roberta'}", "trainer.max_steps=1")
    assert "\n" not in str(e.value)


def test_a_teacher_of_another_domain_or_that_cannot_read_the_views_is_one_line(tiny):
    audio = tiny.run("domain=audio", "trainer.max_steps=1", name="audio")
    with pytest.raises(UserError, match="was trained on domain audio, this run is domain image") as e:
        tiny.run("objective=distill", f"objective.teacher={audio}", "trainer.max_steps=1")
    assert "\n" not in str(e.value)
    photos = write_image_folder(tiny.root / "photos", 12, 6)
    rgb = tiny.run("trainer.max_steps=1", f"data.path={photos}", "data.batch_size=6", name="rgb")  # digits are gray
    with pytest.raises(UserError, match="cannot read this run's views") as e:
        tiny.run("objective=distill", f"objective.teacher={rgb}", "trainer.max_steps=1", name="student")
    assert "\n" not in str(e.value)


def test_a_run_from_an_exported_teacher_resumes_exactly_and_keeps_the_teacher(tiny):
    teacher = tiny.run("trainer.max_steps=2", name="teacher")
    student = (*CONSTANT, "objective=distill", f"objective.teacher={teacher}")
    straight = tiny.run(*student, "trainer.max_steps=4", name="straight")
    tiny.run(*student, "trainer.max_steps=2", name="split")
    split = tiny.run(*student, "trainer.max_steps=4", name="split")
    a, b = (latest_state(f)["model"] for f in (straight, split))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    kept = multissl.load_encoder(teacher).encoder.state_dict()
    for k, v in kept.items():  # the teacher in the student's checkpoint is the export, untouched by 4 steps
        assert torch.equal(a["objective.teacher." + k], v), k
