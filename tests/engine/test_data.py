"""The step-indexed data pipeline (multissl/data.py): draws that depend only on (seed, position), epochs that are
permutations, the step sampler's positions, and a global batch that does not depend on the process count."""
import pytest
import torch

from multissl.data import Collate, StepSampler, Views, make_views, train_loader
from multissl.domains.image import ImageDomain
from multissl.errors import UserError

from tiny import item_views, write_image_shards


@pytest.fixture(scope="module")
def digits():
    d = ImageDomain()
    d.dataset("train")
    return d


@pytest.fixture(scope="module", params=["digits", "shards"])
def images(request, tmp_path_factory):
    """The digits, and images read by index from shards (LitData chunks): the promise holds for both."""
    if request.param == "digits":
        return request.getfixturevalue("digits")
    d = ImageDomain(data={"path": str(write_image_shards(tmp_path_factory.mktemp("shards")))})
    d.dataset("train")
    return d


def _same_item(a, b, d):
    return (all(torch.equal(p, q) for p, q in zip(item_views(d, a), item_views(d, b))) and a["y"] == b["y"]
            and torch.equal(a["keep"], b["keep"]) and torch.equal(a["masked"], b["masked"]))


def test_views_dataset_is_deterministic_across_instances(digits):
    base = digits.dataset("train")
    a, b = Views(base, digits, 3, 2), Views(base, digits, 3, 2)
    ks = [0, 5, len(base) - 1, len(base), 2 * len(base) + 7]  # crosses epoch boundaries
    for k in ks:  # b visited in another order than a: no hidden state
        assert _same_item(a[k], b[k], digits)
    for k in reversed(ks):
        assert _same_item(a[k], b[k], digits)
    assert not _same_item(a[0], Views(base, digits, 4, 2)[0], digits)  # the seed matters


def test_views_dataset_epochs_are_permutations(digits):
    base = digits.dataset("train")
    v = Views(base, digits, 0, 2)
    n = len(base)
    e0 = [v.sample_index(k) for k in range(n)]
    e1 = [v.sample_index(k) for k in range(n, 2 * n)]
    assert sorted(e0) == list(range(n)) and sorted(e1) == list(range(n))
    assert e0 != e1


def test_step_sampler_draw_positions():
    assert list(StepSampler(2, 4, 4, 0, 1)) == [[8, 9, 10, 11], [12, 13, 14, 15]]
    assert list(StepSampler(2, 4, 4, 0, 2)) == [[8, 9], [12, 13]]
    assert list(StepSampler(2, 4, 4, 1, 2)) == [[10, 11], [14, 15]]
    assert len(StepSampler(3, 3, 4, 0, 1)) == 0


def test_global_batch_is_process_count_invariant(images):
    digits = images
    base, seed, step, b = digits.dataset("train"), 11, 5, 6
    one = make_views(digits, next(iter(train_loader(base, digits, seed, 2, b, step, step + 1, rank=0, world=1))))
    parts = [make_views(digits, next(iter(train_loader(base, digits, seed, 2, b, step, step + 1, rank=r, world=2))))
             for r in (0, 1)]
    assert one["views"][0].shape == (b, digits.channels, digits.image_size, digits.image_size)
    assert len(one["views"]) == 2
    for i in range(2):
        assert torch.equal(torch.cat([p["views"][i] for p in parts]), one["views"][i])
    for key in ("y", "keep", "masked"):
        assert torch.equal(torch.cat([p[key] for p in parts]), one[key])
    # and the batch is exactly the collated draws at positions step*b .. step*b + b - 1
    ref = make_views(digits, Collate(digits)([Views(base, digits, seed, 2)[k] for k in range(step * b, step * b + b)]))
    assert torch.equal(ref["views"][1], one["views"][1]) and torch.equal(ref["y"], one["y"])


def test_batches_do_not_depend_on_loader_workers(images):
    digits = images
    base = digits.dataset("train")
    batches = {w: [make_views(digits, b) for b in train_loader(base, digits, 3, 2, 16, 4, 7, 0, 1, workers=w)]
               for w in (0, 2)}
    for a, b in zip(*batches.values(), strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a["views"], b["views"], strict=True))
        assert torch.equal(a["keep"], b["keep"]) and torch.equal(a["y"], b["y"])


def test_num_workers_auto_is_one_per_core_but_one_on_an_accelerator_a_quarter_on_cpu(monkeypatch):
    from multissl.data import loader_options, resolve_workers
    for cores, gpu, cpu in ((1, 0, 0), (2, 1, 0), (6, 5, 1), (16, 8, 4), (64, 8, 8)):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert resolve_workers("auto", accelerator=True) == gpu and resolve_workers("auto", accelerator=False) == cpu
    assert resolve_workers(3) == 3
    opts = loader_options(2)
    assert opts["num_workers"] == 2 and opts["persistent_workers"] and opts["prefetch_factor"] >= 2
    assert loader_options(0) == {"num_workers": 0, "pin_memory": torch.cuda.is_available()}
    with pytest.raises(UserError, match="num_workers"):
        resolve_workers("many")


def test_views_are_made_where_the_batch_is(digits):
    """Raw samples and draws travel; make_views turns them into views once per batch, where the batch is."""
    batch = next(iter(train_loader(digits.dataset("train"), digits, 0, 2, 8, 0, 1, 0, 1)))
    assert "views" not in batch and batch["drawn"]["image"].dtype == torch.uint8  # raw samples travel
    made = make_views(digits, batch)
    assert "drawn" not in made and len(made["views"]) == 2 and made["views"][0].shape == (8, 1, 8, 8)


def test_cpu_apply_in_chunks_gives_the_whole_batch_views(digits, monkeypatch):
    """On a CPU the batch's views are made a chunk of samples at a time (data.CPU_CHUNK_BYTES of draws per chunk);
    the views equal those of one whole-batch apply, in the same order."""
    import multissl.data as D
    drawn = next(iter(train_loader(digits.dataset("train"), digits, 0, 2, 8, 0, 1, 0, 1)))["drawn"]
    per_sample = sum(v[0].numel() * v.element_size() for v in drawn.values())
    monkeypatch.setattr(D, "CPU_CHUNK_BYTES", 3 * per_sample + 1)
    calls = []
    apply = digits.apply
    monkeypatch.setattr(digits, "apply", lambda d: calls.append(len(d["image"])) or apply(d))
    chunked = D.apply_views(digits, drawn)
    assert calls == [3, 3, 2]
    whole = apply(drawn)
    assert [v.shape for v in chunked] == [v.shape for v in whole]
    for a, b in zip(chunked, whole, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # an accelerator takes the whole batch in one call, and a tiny budget still makes progress
    assert D.chunk_size({"x": torch.empty(8, 4, device="meta")}) == 8
    monkeypatch.setattr(D, "CPU_CHUNK_BYTES", 1)
    assert D.chunk_size(drawn) == 1


def test_local_views_are_asked_of_domains_that_offer_them(digits, capsys):
    """An objective's local_views reach a domain with local views (image: small crops after the global views); a
    domain without them gives the global views only and the run says so in one line."""
    from multissl.data import view_counts

    class MultiCrop:
        global_views, local_views = 2, 3

    class Flat:
        name, num_tokens = "flat", 4

    cifar_sized = ImageDomain(image_size=32, patch_size=4)  # local crops of 16 px: 4 x 4 patches
    assert view_counts(cifar_sized, MultiCrop()) == (2, 3) and capsys.readouterr().err == ""
    assert view_counts(Flat(), MultiCrop()) == (2, 0)
    assert capsys.readouterr().err.count("\n") == 1
    # 8 x 8 digits: a local crop of 4 px would hold 2 x 2 patches, too few to offer unasked; domain.local_crops asks
    assert view_counts(digits, MultiCrop()) == (2, 0) and capsys.readouterr().err.count("\n") == 1
    asked = ImageDomain(local_crops=3, state=digits.state())
    assert view_counts(asked, MultiCrop()) == (2, 3) and capsys.readouterr().err == ""
    views = item_views(asked, Views(asked.dataset("train"), asked, 0, 2, n_local=3)[0])
    assert [tuple(v.shape) for v in views] == [(1, 8, 8)] * 2 + [(1, 4, 4)] * 3
    assert len(item_views(digits, Views(digits.dataset("train"), digits, 0, 2)[0])) == 2


def test_chunked_views_reach_the_encoder_without_a_copy():
    """On a CPU, apply runs in chunks written into one tensor per view shape, so the encoder's batch of both global
    views is those views' own storage (no second copy of the step's largest tensor), equal to torch.cat of them."""
    from multissl.data import CPU_CHUNK_BYTES, apply_views, join

    class Doubling:  # views 0, 1: [b 3 16 16] (x, 2x); view 2: [b 3 8 8]
        def apply(self, d):
            x = d["x"].float()
            return [x, 2 * x, x[..., :8, :8]]
    b = 3 * CPU_CHUNK_BYTES // (3 * 16 * 16) + 5  # several chunks
    drawn = {"x": torch.arange(b * 3 * 16 * 16, dtype=torch.int32).view(b, 3, 16, 16) % 251}
    views = apply_views(Doubling(), drawn)
    want = Doubling().apply(drawn)
    for v, w in zip(views, want, strict=True):
        assert torch.equal(v, w)
    joined = join(views[:2])
    assert torch.equal(joined, torch.cat(want[:2])) and joined.data_ptr() == views[0].data_ptr()
    assert torch.equal(join([want[0], want[1]]), torch.cat(want[:2]))  # separate tensors: concatenated


def test_evaluation_batches_hold_a_bounded_number_of_bytes():
    from multissl.data import EVAL_BATCH_BYTES, eval_batch_size

    def items(shape):
        return [(torch.zeros(shape, dtype=torch.uint8), -1)] * 3
    assert eval_batch_size(items((1, 8, 8))) == 512  # digits: the usual batch
    big = eval_batch_size(items((3, 224, 224)))
    assert big == EVAL_BATCH_BYTES // (3 * 224 * 224 * 4) and 64 <= big < 512


def test_an_objective_with_two_masked_views_gets_a_mask_per_view_view_major(digits):
    """View 0's mask is the one-mask draw (objectives that mask one view see the same batches), view 1's is drawn
    after it; batched, the rows are [2b k], view 0's first."""
    base = digits.dataset("train")
    one, two = Views(base, digits, 3, 2), Views(base, digits, 3, 2, n_masks=2)
    for k in (0, 7):
        a, b = one[k], two[k]
        assert torch.equal(b["keep"][0], a["keep"]) and torch.equal(b["masked"][0], a["masked"])
        assert not torch.equal(b["masked"][1], b["masked"][0]) and b["masked"][1].shape == a["masked"].shape
        assert all(torch.equal(p, q) for p, q in zip(item_views(digits, a), item_views(digits, b)))
    batch = Collate(digits)([two[k] for k in range(4)])
    m = one[0]["masked"].shape[0]
    assert batch["masked"].shape == (8, m) and batch["keep"].shape == (8, digits.num_tokens - m)
    assert torch.equal(batch["masked"][:4], torch.stack([two[k]["masked"][0] for k in range(4)]))
    assert torch.equal(batch["masked"][4:], torch.stack([two[k]["masked"][1] for k in range(4)]))


def test_a_domain_that_corrupts_in_place_masks_view_0_alone():
    from multissl.domains.tabular import TabularDomain
    d = TabularDomain(data={"name": "iris"})
    item = Views(d.dataset("train"), d, 0, 2, corrupt=True, n_masks=2)[0]
    assert torch.is_tensor(item["masked"]) and item["masked"].dim() == 1 and "clean" in item


def test_an_objective_mask_ratio_keeps_a_random_part_of_the_domains_mask_visible(digits):
    """Objective.mask_ratio: at most round(ratio n) masked, a subset of the domain's own mask (drawn after it, so the
    views and the domain's mask are the one-mask draws); the rest back in keep; nothing changes at a larger ratio."""
    base = digits.dataset("train")
    n = digits.num_tokens
    plain, thin = Views(base, digits, 4, 2), Views(base, digits, 4, 2, mask_ratio=0.3)
    for k in (0, 9):
        a, b = plain[k], thin[k]
        assert len(b["masked"]) == round(0.3 * n) < len(a["masked"])
        assert set(b["masked"].tolist()) <= set(a["masked"].tolist())
        assert sorted(b["keep"].tolist() + b["masked"].tolist()) == list(range(n))
        assert torch.equal(b["keep"], b["keep"].sort().values) and torch.equal(b["masked"], b["masked"].sort().values)
        assert all(torch.equal(p, q) for p, q in zip(item_views(digits, a), item_views(digits, b)))
        assert torch.equal(Views(base, digits, 4, 2, mask_ratio=0.3)[k]["masked"], b["masked"])  # from the draw's rng
    wide = Views(base, digits, 4, 2, mask_ratio=0.99)[0]
    assert torch.equal(wide["masked"], plain[0]["masked"])


def test_a_mask_ratio_on_a_domain_whose_keep_covers_every_token_thins_masked_alone():
    from multissl.data import thin_mask
    keep, masked = torch.arange(10), torch.tensor([1, 3, 4, 7, 8, 9])
    k, m = thin_mask(keep, masked, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(k, keep) and len(m) == 2 and set(m.tolist()) <= set(masked.tolist())
    k, m = thin_mask(torch.tensor([0, 2]), torch.tensor([1, 3]), 0.01, torch.Generator().manual_seed(0))
    assert len(m) == 1 and sorted(k.tolist() + m.tolist()) == [0, 1, 2, 3]  # at least one stays masked
