"""The video domain: moving digits move as labelled; a view's frames share one crop, flip and jitter, and views are
clips of one video at their own times; tube masks repeat over time; export takes clips of any layout, length and
size; the raw-pixel baselines and the direction kNN are logged; r3d18 trains and masked objectives refuse it."""
import numpy as np
import pytest
import torch

import multissl
from multissl.data import sample_views
from multissl.domains.video import VideoDomain
from multissl.domains.video.moving import DIRECTIONS, moving_digits
from multissl.domains.video.views import centre_window, tube_mask
from multissl.errors import UserError
from multissl.domains.patches import PatchEmbed, patchify, unpatchify

SMALL = {"n": 120, "frames": 12, "size": 32}
STILL = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "flip": 0.0, "jitter_p": 0.0}


def domain(tmp_path, **kw):
    d = VideoDomain(default=SMALL, cache_dir=str(tmp_path), **kw)
    d.dataset("train")
    return d


def test_moving_digits_move_in_their_direction_and_stay_in_the_frame():
    d = moving_digits(n=64, frames=6, size=32, seed=1)
    assert d["video"].shape == (64, 6, 1, 32, 32) and d["video"].dtype == np.uint8
    assert sorted(set(d["direction"].tolist())) == list(range(8)) and set(d["digit"].tolist()) == set(range(10))
    for clip, k in zip(d["video"], d["direction"]):
        mass = clip[:, 0].astype(float)
        rows, cols = np.indices(mass.shape[1:])
        cy = (mass * rows).sum((1, 2)) / mass.sum((1, 2))
        cx = (mass * cols).sum((1, 2)) / mass.sum((1, 2))
        step = np.array([cy[1] - cy[0], cx[1] - cx[0]])  # the first step, before any bounce can turn it
        dy, dx = DIRECTIONS[k]
        assert (dy == 0 or np.sign(step[0]) in (dy, 0)) and (dx == 0 or np.sign(step[1]) in (dx, 0))
        assert mass.sum((1, 2)).min() > 0  # the digit never leaves the frame
    again = moving_digits(n=64, frames=6, size=32, seed=1)
    assert np.array_equal(again["video"], d["video"])


def test_the_default_has_a_fixed_split_two_labels_and_tokens_from_tubelets(tmp_path, capsys):
    d = domain(tmp_path)
    tr, te = d.dataset("train"), d.dataset("test")
    assert len(tr) + len(te) == 120 and d.num_classes == 10 and d.tubelet == [2, 8, 8]
    assert d.grid == (4, 4, 4) and d.num_tokens == 64 and d.target_dim == 2 * 8 * 8 * 1
    assert "domain.tubelet=[2, 8, 8]" in capsys.readouterr().err
    assert len(d.extra["direction"]["test"]) == len(te)


def test_every_frame_of_a_view_gets_the_same_crop_flip_and_jitter(tmp_path):
    d = domain(tmp_path, frames=4, clips_apart=0, flip=1.0, jitter_p=1.0)
    frozen = torch.full((12, 1, 32, 32), 0, dtype=torch.uint8)
    frozen[:, :, 4:20, 10:14] = 200  # a still video: every frame the same
    d._clips["train"].read = lambda i, idx: frozen[idx]
    g = torch.Generator().manual_seed(0)
    for v in sample_views(d, d.draw(torch.tensor([0, 0]), g, 2)):
        assert v.shape == (1, 4, 32, 32)  # [c t s s]
        assert all(torch.equal(v[:, 0], v[:, k]) for k in range(4))


def test_views_are_clips_of_their_own_time_unless_clips_apart_is_zero(tmp_path):
    apart = domain(tmp_path, frames=4, **STILL)
    same = domain(tmp_path, frames=4, clips_apart=0, **STILL)
    g = torch.Generator().manual_seed(0)
    differ = 0
    for k in range(20):
        a, b = sample_views(apart, apart.draw(torch.tensor([0, k]), g, 2))
        differ += not torch.allclose(a, b)
        c, e = sample_views(same, same.draw(torch.tensor([0, k]), g, 2))
        torch.testing.assert_close(c, e)
    assert differ > 10


def test_local_views_are_shorter_and_smaller(tmp_path):
    d = domain(tmp_path)
    assert d.local_views and (d.local_frames, d.local_size) == (4, 16)
    views = sample_views(d, d.draw(torch.tensor([0, 3]), torch.Generator().manual_seed(0), 2, 3))
    assert [tuple(v.shape) for v in views] == [(1, 8, 32, 32)] * 2 + [(1, 4, 16, 16)] * 3


def test_tube_masks_repeat_one_spatial_mask_over_time():
    keep, masked = tube_mask(5, (4, 3, 3), 0.75, torch.Generator().manual_seed(0))
    assert keep.shape == (5, 4 * 2) and masked.shape == (5, 4 * 7)
    for k, m in zip(keep, masked):
        assert sorted(k.tolist() + m.tolist()) == list(range(36))
        spatial = {i % 9 for i in m.tolist()}
        assert len(spatial) == 7 and {(t, s) for t in range(4) for s in spatial} == {(i // 9, i % 9) for i in m.tolist()}


@pytest.mark.parametrize("grid,kept", [((4, 2, 2), 2), ((4, 3, 3), 2), ((4, 4, 4), 2), ((2, 14, 14), 20),
                                       ((4, 1, 2), 1)])
def test_tube_masks_keep_at_least_two_places_on_small_grids(grid, kept):
    """VideoMAE's 0.9 of 14 x 14 places keeps 20; of 2 x 2 it would keep none, of 3 x 3 one: two stay."""
    keep, masked = tube_mask(3, grid, 0.9, torch.Generator().manual_seed(0))
    assert keep.shape == (3, grid[0] * kept) and masked.shape == (3, grid[0] * (grid[1] * grid[2] - kept))


def test_tubelet_targets_are_in_the_patch_embeddings_token_order():
    x = torch.randn(2, 3, 4, 8, 8)  # [b c t s s]
    t = patchify(x, (2, 4, 4), normalize=False)  # [b n (t h w c)]
    assert t.shape == (2, 2 * 2 * 2, 2 * 4 * 4 * 3)
    torch.testing.assert_close(unpatchify(t, (2, 4, 4), (2, 2, 2)), x)
    emb = PatchEmbed(3, (4, 8, 8), (2, 4, 4), 6, pos="sincos")
    w = emb.proj.weight  # [d c t h w]: each token is its tubelet's pixels times the kernel
    manual = torch.einsum("bnk,dk->bnd", t, w.permute(0, 2, 3, 4, 1).reshape(6, -1)) + emb.proj.bias
    pos = emb(torch.zeros_like(x)) - emb.proj.bias
    torch.testing.assert_close(emb(x), manual + pos, atol=1e-5, rtol=1e-5)


def test_preprocess_takes_any_layout_length_and_size(tmp_path):
    d = domain(tmp_path)
    clip = d.eval_raw(torch.tensor([1, 0]))  # [t c s s] uint8, as stored
    assert clip.shape == (8, 1, 32, 32) and clip.dtype == torch.uint8
    first = d.preprocess(clip[None])
    torch.testing.assert_close(d.preprocess(clip.permute(0, 2, 3, 1)[None]), first)  # channels last
    torch.testing.assert_close(d.eval_input(torch.tensor([1, 0])), first[0])
    long = torch.cat([clip[:1].repeat(6, 1, 1, 1), clip, clip[-1:].repeat(6, 1, 1, 1)])  # 20 frames, ours in the middle
    torch.testing.assert_close(d.preprocess(long[None]), first)
    assert d.preprocess(clip[None, :3]).shape == first.shape  # shorter: spread over it
    big = torch.nn.functional.interpolate(clip.float(), scale_factor=2).round().to(torch.uint8)
    assert d.preprocess(big[None]).shape == first.shape
    mixed = [long.permute(0, 2, 3, 1).numpy(), clip[:3], big]  # a list: each clip its own length, size, layout
    torch.testing.assert_close(d.preprocess(mixed), torch.cat([d.preprocess(c[None]) for c in (long, clip[:3], big)]))
    with pytest.raises(UserError, match="channels"):
        d.preprocess(torch.zeros(1, 8, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(UserError, match="no clips"):
        d.preprocess([])
    assert centre_window(20, 4, 2) == [6, 8, 10, 12] and centre_window(3, 4, 1) == [0, 1, 1, 2]


def test_a_run_logs_both_labels_and_the_raw_pixel_baselines_and_exports(tiny, tmp_path):
    args = ("domain=video", "domain.default.n=120", "domain.default.frames=12", f"domain.cache_dir={tmp_path / 'c'}")
    folder = tiny.run(*args, "objective=mae", "trainer.max_steps=2")
    final = tiny.metrics(folder)[-1]
    keys = {"knn_acc", "knn_direction", "pixel_knn_acc", "frame_knn_acc", "pixel_knn_direction",
            "frame_knn_direction"}
    assert keys <= set(final) and all(0 <= final[k] <= 1 for k in keys)
    enc = multissl.load_encoder(folder)
    clips = torch.randint(0, 256, (3, 10, 40, 40, 1), dtype=torch.uint8)  # other length and size, channels last
    assert enc.embed(clips).shape == (3, 16)


def test_r3d18_trains_and_masked_objectives_refuse_it(tiny, tmp_path):
    args = ("domain=video", "domain.default.n=120", "domain.default.frames=12", f"domain.cache_dir={tmp_path / 'c'}",
            "encoder=r3d18")
    folder = tiny.run(*args, "objective=simclr", "trainer.max_steps=2", "data.batch_size=8", tiny_encoder=False)
    assert multissl.load_encoder(folder).embed(torch.zeros(2, 8, 1, 32, 32, dtype=torch.uint8)).shape == (2, 512)
    with pytest.raises(UserError, match="objective=mae masks tokens but encoder=r3d18"):
        tiny.run(*args, "objective=mae", "trainer.max_steps=1", name="mae", tiny_encoder=False)
