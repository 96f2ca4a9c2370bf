"""Audio domain: audio folders and HF audio datasets, log-mel features and their statistics, BYOL-A views,
patch and band masks, spectrogram targets, waveform preprocessing for export, and every bad input."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from multissl.data import stack_draws
from multissl.domains.audio import AudioDomain, mix_at_snr
from multissl.errors import UserError

RATE = 16000


def tone(freq: float, seconds: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    w = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([w, 0.5 * w], 1) if channels == 2 else w


@pytest.fixture
def folder(tmp_path):
    """train/{low,high} and test/{low,high}: 3 + 3 training clips of different lengths, rates, layouts."""
    root = tmp_path / "clips"
    for split, n in (("train", 3), ("test", 2)):
        for cls, f in (("high", 2000.0), ("low", 300.0)):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                sf.write(root / split / cls / f"{i}.wav", tone(f * (1 + 0.05 * i), 0.6 + 0.3 * i), RATE)
    sf.write(root / "train" / "low" / "stereo_8k.flac", tone(300.0, 1.5, 8000, channels=2), 8000)
    sf.write(root / "train" / "high" / "x.ogg", tone(2100.0, 0.8), RATE)
    return root


def domain(path=None, **kw):
    return AudioDomain(data={"path": str(path) if path else None, **kw.pop("data", {})}, **kw)


# ---- folders ------------------------------------------------------------------------------------

def test_folder_labels_splits_and_formats(folder):
    d = domain(folder)
    tr, te = d.dataset("train"), d.dataset("test")
    assert len(tr) == 8 and len(te) == 4
    assert d.num_classes == 2 and tr.classes == {"high": 0, "low": 1}
    names = [f.name for f in tr.files]
    assert "stereo_8k.flac" in names and "x.ogg" in names
    assert sorted(te[i]["y"] for i in range(len(te))) == [0, 0, 1, 1]


def test_stereo_is_downmixed_and_resampled(folder):
    d = domain(folder)
    tr = d.dataset("train")
    s = tr[[f.name for f in tr.files].index("stereo_8k.flac")]["x"]
    assert s.ndim == 1 and s.dtype == torch.float32
    assert abs(len(s) - 1.5 * RATE) <= 2  # 1.5 s at 8 kHz -> 1.5 s at 16 kHz
    # downmix = mean of the channels (0.3 and 0.15 amplitude): peak ~0.225
    assert s.abs().max().item() == pytest.approx(0.225, abs=0.02)


def test_root_files_are_unlabeled(tmp_path):
    sf.write(tmp_path / "a.wav", tone(440, 0.5), RATE)
    sf.write(tmp_path / "b.wav", tone(880, 0.5), RATE)
    d = domain(tmp_path)
    assert [d.dataset("train")[i]["y"] for i in range(2)] == [-1, -1]
    assert d.num_classes is None and d.dataset("test") is None


def test_corrupt_file_is_user_error_naming_it(folder):
    (folder / "train" / "low" / "0.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(UserError, match=r"0\.wav") as e:
        domain(folder).dataset("train")
    assert "\n" not in str(e.value) and "skip_bad" in str(e.value)


def test_zero_length_file_is_user_error(folder):
    sf.write(folder / "train" / "low" / "0.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(UserError, match=r"0\.wav is empty"):
        domain(folder).dataset("train")


def test_clip_shorter_than_one_patch_is_user_error(folder):
    sf.write(folder / "train" / "low" / "0.wav", tone(300, 0.01), RATE)  # 10 ms < one 2-frame (20 ms) patch
    with pytest.raises(UserError, match="shorter than one patch"):
        domain(folder).dataset("train")


def test_unsupported_format_is_user_error_naming_it(folder):
    (folder / "train" / "low" / "song.m4a").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match=r"song\.m4a.*not supported"):
        domain(folder).dataset("train")


def test_folder_of_only_unsupported_files_says_what_it_found(tmp_path):
    (tmp_path / "a.m4a").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match=r"no audio files.*found \.m4a"):
        domain(tmp_path).dataset("train")


def test_folder_without_audio_is_user_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="no audio files"):
        domain(tmp_path).dataset("train")


def test_missing_path_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        domain(tmp_path / "nothere").dataset("train")


def test_skip_bad_skips_and_counts(folder):
    (folder / "train" / "low" / "0.wav").write_bytes(b"garbage")
    sf.write(folder / "train" / "low" / "1.wav", np.zeros(0, np.float32), RATE)
    d = domain(folder, data={"skip_bad": True})
    tr = d.dataset("train")
    names = [f"{f.parent.name}/{f.name}" for f in tr.files]
    got = tr[names.index("low/0.wav")]
    assert got["skipped"] == 2 and got["x"].shape[0] > 0  # 0.wav and 1.wav skipped, then 2.wav read
    assert tr[names.index("low/2.wav")]["skipped"] == 0


def test_hf_audio_dataset(tmp_path):
    import io

    from datasets import Audio, ClassLabel, Dataset, DatasetDict

    def wav_bytes(f, rate):
        buf = io.BytesIO()
        sf.write(buf, tone(f, 0.7, rate), rate, format="WAV")
        return {"bytes": buf.getvalue(), "path": None}

    def table(clips, labels):  # encoded by hand: datasets would need torchcodec to encode audio itself
        ds = Dataset.from_dict({"audio": clips, "label": labels})
        return ds.cast_column("audio", Audio(decode=False)).cast_column("label", ClassLabel(names=["a", "b"]))

    dd = DatasetDict({"train": table([wav_bytes(300, 8000), wav_bytes(900, RATE)], [0, 1]),
                      "test": table([wav_bytes(300, RATE)], [0])})
    dd.save_to_disk(str(tmp_path / "hf"))
    d = domain(tmp_path / "hf")
    tr = d.dataset("train")
    assert len(tr) == 2 and len(d.dataset("test")) == 1 and d.num_classes == 2
    assert tr[1]["y"] == 1 and abs(len(tr[0]["x"]) - 0.7 * RATE) <= 2  # resampled from 8 kHz


def _saved_clips(path, n_train=6, n_test=2):
    """An HF audio dataset saved to disk: WAV bytes per row (labels 0/1 alternating)."""
    import io

    from datasets import Audio, ClassLabel, Dataset, DatasetDict

    def wav(i):
        buf = io.BytesIO()
        sf.write(buf, tone(300.0 * (1 + i), 0.5, RATE), RATE, format="WAV")
        return {"bytes": buf.getvalue(), "path": None}

    def table(n, offset):
        ds = Dataset.from_dict({"audio": [wav(offset + i) for i in range(n)], "label": [i % 2 for i in range(n)]})
        return ds.cast_column("audio", Audio(decode=False)).cast_column("label", ClassLabel(names=["a", "b"]))

    DatasetDict({"train": table(n_train, 0), "test": table(n_test, n_train)}).save_to_disk(str(path))
    return path


def test_hf_audio_rows_are_decoded_per_item(tmp_path, monkeypatch):
    """Loading reads the statistics' clips (training rows only) and the label column; a domain from state reads
    none; an item decodes its row alone; the split holds no waveform and pickles as a reference."""
    import pickle
    path = _saved_clips(tmp_path / "hf")
    reads = []
    real = sf.read
    monkeypatch.setattr(sf, "read", lambda *a, **k: reads.append(1) or real(*a, **k))
    d = domain(path)
    tr = d.dataset("train")
    d.dataset("test")
    assert len(reads) == 6 and d.num_classes == 2 and tr.labels == [0, 1, 0, 1, 0, 1]
    reads.clear()
    e = AudioDomain(data={"path": str(path)}, state=d.state())
    tr2, te2 = e.dataset("train"), e.dataset("test")
    assert reads == [] and e.num_classes == 2 and len(tr2) == 6 and len(te2) == 2
    w = tr2[4]["x"]
    assert len(reads) == 1 and w.dtype == torch.float32 and abs(len(w) - 0.5 * RATE) <= 2
    assert torch.equal(w, tr[4]["x"])
    held = [*vars(tr2).values(), *vars(tr2.read).values()]
    assert isinstance(tr2.files, range) and not any(torch.is_tensor(v) or isinstance(v, np.ndarray) for v in held)
    blob = pickle.dumps(tr2)
    assert len(blob) < sum(f.stat().st_size for f in path.rglob("*.arrow")) / 10
    assert torch.equal(pickle.loads(blob)[4]["x"], w)


def test_hf_audio_unreadable_row_is_named_or_skipped(tmp_path):
    from datasets import Audio, Dataset, load_from_disk
    good = _saved_clips(tmp_path / "ok", n_train=1, n_test=1)
    clip = load_from_disk(str(good))["train"].cast_column("audio", Audio(decode=False))[0]["audio"]
    ds = Dataset.from_dict({"audio": [clip, {"bytes": b"not audio", "path": None}, clip]})
    ds.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "hf"))
    state = {"mean": [0.0] * 40, "std": [1.0] * 40}
    with pytest.raises(UserError, match="row 1 of HF dataset"):
        AudioDomain(data={"path": str(tmp_path / "hf")}, state=state).dataset("train")[1]
    skip = AudioDomain(data={"path": str(tmp_path / "hf"), "skip_bad": True}, state=state).dataset("train")
    assert skip[1]["skipped"] == 1 and len(skip[1]["x"]) > 0


# ---- features -----------------------------------------------------------------------------------

def test_features_shape_and_normalization_statistics(folder):
    d = domain(folder)
    tr = d.dataset("train")
    x = torch.stack([d.eval_input(tr[i]["x"]) for i in range(len(tr))])  # [n 1 mel frames]
    assert x.shape == (8, 1, 40, 100)
    assert len(d.mean) == len(d.std) == 40
    # the statistics are those of the training clips' features: normalized, they have mean 0, std 1 per bin
    per_bin = x[:, 0].transpose(0, 1).flatten(1)  # [mel n*frames]
    torch.testing.assert_close(per_bin.mean(1), torch.zeros(40), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_bin.std(1), torch.ones(40), atol=0.02, rtol=0)


def test_log_mel_matches_a_hand_computed_spectrogram(folder):
    import torchaudio.functional as AF
    d = domain(folder)
    w = torch.from_numpy(tone(500, 1.0))
    spec = torch.stft(F_pad(w, 200), 400, 160, window=torch.hann_window(400), center=False, return_complex=True).abs() ** 2
    fb = AF.melscale_fbanks(201, 0.0, RATE / 2, 40, RATE)  # [freq mel]
    want = (fb.T @ spec + 1e-6).log()[:, :100]
    torch.testing.assert_close(d.log_mel(w), want, atol=1e-3, rtol=1e-4)


def F_pad(w, n):
    return torch.nn.functional.pad(w[None, None], (n, n), mode="reflect")[0, 0]


def test_preprocess_int16_float_and_lengths(folder):
    d = domain(folder)
    d.dataset("train")
    w = torch.from_numpy(tone(440, 1.0))
    x = d.preprocess(w[None])
    assert x.shape == (1, 1, 40, 100)
    q = (w * 32767).round().short()[None]
    torch.testing.assert_close(d.preprocess(q.numpy()), d.preprocess(q.float() / 32768))  # int16 = full scale
    torch.testing.assert_close(d.preprocess(w), x)  # a single clip
    torch.testing.assert_close(x[0], d.eval_input(w))
    long = torch.cat([torch.zeros(4000), w, torch.zeros(4000)])  # centre-cropped back to w
    torch.testing.assert_close(d.preprocess(long[None]), x)
    assert d.preprocess(w[None, :5000]).shape == x.shape  # padded


def test_preprocess_wrong_shape_is_user_error(folder):
    d = domain(folder)
    d.dataset("train")
    with pytest.raises(UserError, match=r"\[batch, samples\]"):
        d.preprocess(torch.zeros(2, 2, 16000))


def test_state_roundtrip(folder):
    d = domain(folder)
    d.dataset("train")
    e = AudioDomain(state=d.state())
    w = torch.from_numpy(tone(700, 0.9))[None]
    torch.testing.assert_close(e.preprocess(w), d.preprocess(w))


def test_patch_size_must_tile_the_mel_bins():
    with pytest.raises(UserError, match="patch_size"):
        AudioDomain(n_mels=40, patch_size=(16, 10))


# ---- views --------------------------------------------------------------------------------------

def test_views_shapes_determinism_and_global_rng(folder):
    d = domain(folder)
    x = d.dataset("train")[0]["x"]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = d.views(x, torch.Generator().manual_seed(3))
    assert torch.rand(1) == before  # the global RNG is untouched
    b = d.views(x, torch.Generator().manual_seed(3))
    assert len(a) == 2 and all(v.shape == (1, 40, 100) for v in a)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], a[1])


def drawn_batch(d, n=5, n_views=2):
    train = d.dataset("train")
    items = [d.draw(train[i % len(train)]["x"], torch.Generator().manual_seed(i), n_views) for i in range(n)]
    return stack_draws(items)


def test_batched_apply_equals_each_sample_applied_alone(folder):
    d = domain(folder, mix_p=0.7)
    drawn = drawn_batch(d)
    assert drawn["mix"].any() and (drawn["shift"] != 0).any()
    views = d.apply(drawn)
    for i in range(5):
        for v, alone in zip(views, d.apply({k: t[i:i + 1] for k, t in drawn.items()})):
            torch.testing.assert_close(v[i], alone[0], atol=1e-5, rtol=0)


def test_pitch_and_tempo_window_is_the_zero_padded_window_interpolated(folder):
    """The window [top left h w] (reaching past the spectrogram: zeros there) resized back by F.interpolate of
    that window cut from an explicitly zero-padded canvas, one sample at a time."""
    d = domain(folder, gain_db=0.0, mix_p=0.0, shift_seconds=0.0, n_mels=8)
    d.dataset("train")
    drawn = drawn_batch(d, n=3, n_views=1)
    drawn["box"] = torch.tensor([[[-2.0, 5.0, 11.0, 60.0]], [[1.0, -20.0, 6.0, 130.0]], [[0.0, 0.0, 8.0, 100.0]]])
    got = d.apply(drawn)[0]
    for i in range(3):
        spec = d.features(drawn["wave"][i])  # [1 1 8 frames], no other augmentation
        top, left, h, w = (int(v) for v in drawn["box"][i, 0].tolist())
        canvas = F.pad(spec, (30, 30, 5, 5))
        win = canvas[..., top + 5:top + 5 + h, left + 30:left + 30 + w]
        ref = F.interpolate(win, size=(8, d.frames), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=0)


def test_shift_delays_the_clip_with_zero_fill(folder):
    d = domain(folder, gain_db=0.0, mix_p=0.0, freq_scale=(1.0, 1.0), time_scale=(1.0, 1.0))
    d.dataset("train")
    drawn = drawn_batch(d, n=2, n_views=1)
    drawn["shift"] = torch.tensor([[800], [-800]])
    got = d.apply(drawn)[0]
    w = drawn["wave"][:, 0]
    ref = torch.stack([F.pad(w[0], (800, 0))[:d.clip], F.pad(w[1], (0, 800))[800:]])
    torch.testing.assert_close(got, d.features(ref), atol=1e-5, rtol=0)


def test_local_views_are_short_windows_augmented_alike_in_a_batch_and_alone(folder):
    """Multi-crop: n_local windows of domain.local_seconds after the global views, each the log-mel of a random
    window of the clip; a batch of them equals each sample applied alone; domain.local_crops overrides the count."""
    d = domain(folder, local_seconds=0.3, mix_p=0.7)
    train = d.dataset("train")
    v = d.views(train[0]["x"], torch.Generator().manual_seed(3), 2, n_local=3)
    assert [tuple(t.shape) for t in v] == [(1, 40, 100)] * 2 + [(1, 40, d.local_frames)] * 3 and d.local_frames == 30
    drawn = stack_draws([d.draw(train[i]["x"], torch.Generator().manual_seed(i), 2, n_local=2) for i in range(4)])
    views = d.apply(drawn)
    for i in range(4):
        for u, alone in zip(views, d.apply({k: t[i:i + 1] for k, t in drawn.items()}), strict=True):
            torch.testing.assert_close(u[i], alone[0], atol=1e-5, rtol=0)
    plain = domain(folder, gain_db=0.0, mix_p=0.0, shift_seconds=0.0, freq_scale=(1.0, 1.0), time_scale=(1.0, 1.0),
                   local_seconds=0.3)
    plain.dataset("train")
    w = torch.randn(d.clip, generator=torch.Generator().manual_seed(1)) * 0.1
    drawn = plain.draw(w, torch.Generator().manual_seed(0), 1, n_local=1)
    window = drawn["wave"][1, :plain.local_clip]  # no augmentation: the log-mel of a 0.3-s window of the clip
    start = next(s for s in range(len(w) - plain.local_clip + 1) if torch.equal(w[s:s + 4], window[:4]))
    assert torch.equal(window, w[start:start + plain.local_clip]) and not drawn["wave"][1, plain.local_clip:].any()
    local = plain.views(w, torch.Generator().manual_seed(0), 1, n_local=1)[1]
    torch.testing.assert_close(local, plain.features(window[None], plain.local_frames)[0], atol=1e-5, rtol=0)
    one = domain(folder, local_crops=1)
    one.dataset("train")
    assert len(one.views(train[0]["x"], torch.Generator().manual_seed(0), 2, n_local=3)) == 3
    with pytest.raises(UserError, match="local_seconds"):
        domain(folder, local_seconds=5.0)


def test_views_without_augmentation_equal_the_eval_input(folder):
    d = domain(folder, gain_db=0.0, mix_p=0.0, shift_seconds=0.0, freq_scale=(1.0, 1.0), time_scale=(1.0, 1.0))
    d.dataset("train")
    w = torch.from_numpy(tone(440, 1.0))  # exactly one clip long: the time crop is the whole clip
    v = d.views(w, torch.Generator().manual_seed(0), 1)[0]
    torch.testing.assert_close(v, d.eval_input(w))


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_mix_at_snr_reaches_the_requested_snr(snr):
    g = torch.Generator().manual_seed(0)
    sig, bg = torch.randn(16000, generator=g) * 0.1, torch.randn(16000, generator=g) * 3.0
    added = mix_at_snr(sig, bg, snr) - sig
    assert 10 * math.log10(sig.pow(2).mean() / added.pow(2).mean()) == pytest.approx(snr, abs=1e-3)


def test_background_mixing_changes_the_view(folder):
    w = torch.from_numpy(tone(440, 1.0))
    still = dict(gain_db=0.0, shift_seconds=0.0, freq_scale=(1.0, 1.0), time_scale=(1.0, 1.0))
    clean = domain(folder, mix_p=0.0, **still)
    noisy = domain(folder, mix_p=1.0, snr_db=(0.0, 0.0), **still)
    clean.dataset("train"), noisy.dataset("train")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert (noisy.views(w, g(), 1)[0] - clean.views(w, g(), 1)[0]).abs().mean() > 0.1


def test_short_clip_lands_inside_a_padded_window(folder):
    d = domain(folder)
    w = torch.ones(4000)
    out = d._crop(w, torch.Generator().manual_seed(0))
    assert out.shape == (d.clip,) and out.sum().item() == 4000


# ---- masks and targets --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["patches", "bands"])
def test_masks_partition_tokens_with_the_same_count(mode):
    d = AudioDomain(mask_mode=mode, patch_size=(8, 10))
    keep, masked = d.mask(6, torch.Generator().manual_seed(0))
    n = d.num_tokens
    assert n == 50 and d.grid == (5, 10)
    assert masked.shape == (6, round(0.75 * n)) and keep.shape == (6, n - round(0.75 * n))
    for k, m in zip(keep, masked):
        assert sorted(torch.cat([k, m]).tolist()) == list(range(n))
    again = d.mask(6, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], keep) and torch.equal(again[1], masked)


def band_fraction(masked, grid):
    """Share of masked tokens that lie in a fully masked frequency row or time column."""
    rows, cols = grid
    out = []
    for m in masked:
        full = torch.zeros(rows * cols, dtype=torch.bool)
        full[m] = True
        full = full.view(rows, cols)
        in_band = full.all(1, keepdim=True) | full.all(0, keepdim=True)
        out.append((in_band & full).sum().item() / len(m))
    return sum(out) / len(out)


def test_band_masks_are_made_of_time_and_frequency_bands():
    bands = AudioDomain(mask_mode="bands", mask_ratio=0.5, patch_size=(8, 10))
    patches = AudioDomain(mask_mode="patches", mask_ratio=0.5, patch_size=(8, 10))
    g = torch.Generator().manual_seed(0)
    assert band_fraction(bands.mask(64, g)[1], bands.grid) > 0.6
    assert band_fraction(patches.mask(64, g)[1], patches.grid) < 0.3


def test_target_patches_follow_the_token_order():
    d = AudioDomain(norm_pix_loss=False, patch_size=(8, 10))
    x = torch.arange(40 * 100, dtype=torch.float32).view(1, 1, 40, 100)
    t = d.target(x)
    assert t.shape == (1, 50, 80) and d.target_dim == 80
    # token 11 = frequency row 1, time column 1: mel bins 8..15, frames 10..19
    torch.testing.assert_close(t[0, 11], x[0, 0, 8:16, 10:20].flatten())


def test_embedder_output_shape():
    assert AudioDomain(patch_size=(8, 10)).embedder(16)(torch.zeros(3, 1, 40, 100)).shape == (3, 50, 16)


def test_default_tokens_are_whole_frames():
    d = AudioDomain()  # patch_size [null, 2]: every token is all 40 mel bins of 2 frames
    assert d.patch == (40, 2) and d.grid == (1, 50) and d.target_dim == 80
    x = torch.randn(1, 1, 40, 100)
    torch.testing.assert_close(AudioDomain(norm_pix_loss=False).target(x)[0, 7], x[0, 0, :, 14:16].flatten())


def runs(masked, n):
    """Number of contiguous runs of masked time tokens, averaged over samples."""
    out = []
    for m in masked:
        on = torch.zeros(n, dtype=torch.bool)
        on[m] = True
        out.append(int(on[0]) + int((on[1:] & ~on[:-1]).sum()))
    return sum(out) / len(out)


def test_band_masks_on_frame_tokens_are_time_bands():
    g = torch.Generator().manual_seed(0)
    bands = AudioDomain(mask_mode="bands", mask_ratio=0.5).mask(64, g)[1]
    random = AudioDomain(mask_mode="patches", mask_ratio=0.5).mask(64, g)[1]
    assert bands.shape == random.shape == (64, 25)
    assert runs(bands, 50) < 0.6 * runs(random, 50)  # masked frames come in bands (of up to 5 tokens)
