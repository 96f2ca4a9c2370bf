"""domain.input=waveform: the model reads the samples [1 samples] in frames of domain.frame = [window hop]; views
are the same BYOL-A draws with the spectrogram window acting on the samples (a change of speed); tokens, targets and
the built-in encoder's embedding follow the frames; the raw baseline stays the log-mel; bad settings are one line."""
import pytest
import torch
import torch.nn.functional as F

from multissl.data import stack_draws
from multissl.domains.audio import AudioDomain
from multissl.errors import UserError
from multissl.testing import check_step
from multissl.train import build_domain

STILL = dict(gain_db=0.0, mix_p=0.0, shift_seconds=0.0, time_scale=(1.0, 1.0))


def wave_domain(**kw):
    d = AudioDomain(input="waveform", **kw)
    d.dataset("train")
    return d


def test_tokens_are_the_frames_of_the_waveform():
    d = wave_domain(frame=(400, 320))
    x = torch.randn(2, 1, d.clip)
    assert d.grid == (1, 49) and d.num_tokens == 49 and d.target_dim == 400  # wav2vec 2.0's 49 frames per second
    target = d.target(x)
    assert target.shape == (2, 49, 400)
    frame = x[1, 0, 320 * 7:320 * 7 + 400]  # frame 7, standardized
    torch.testing.assert_close(target[1, 7], (frame - frame.mean()) / (frame.var() + 1e-6).sqrt())
    tokens = d.embedder(16)(x)
    assert tokens.shape == (2, 49, 16)
    assert d.embedder(16)(x[..., :d.local_clip]).shape == (2, 24, 16)  # a local view: its own frames
    assert d.steps(tokens, None)[0].shape == (2, 49, 16)


def test_views_are_waveforms_and_the_window_changes_speed():
    d = wave_domain(**STILL)
    w = d.dataset("train")[0]["x"]
    v = d.views(w, torch.Generator().manual_seed(0), 2, n_local=1)
    assert [tuple(t.shape) for t in v] == [(1, d.clip)] * 2 + [(1, d.local_clip)]
    plain = d.views(w[:d.clip], torch.Generator().manual_seed(0), 1)[0]
    # no augmentation: the clip itself (to float32 grid coordinates over 16,000 samples: 1e-3 of a sample)
    torch.testing.assert_close(plain, d.eval_input(w[:d.clip]), atol=1e-4, rtol=0)
    drawn = stack_draws([d.draw(d.dataset("train")[i]["x"], torch.Generator().manual_seed(i), 1) for i in range(2)])
    drawn["box"] = torch.tensor([[[0.0, 100.0, 1.0, 12000.0]], [[0.0, -2000.0, 1.0, 20000.0]]])
    got = d.apply(drawn)[0]
    for i in range(2):  # the window [left, left + width) of the zero-padded clip, resampled to the clip's length
        left, width = int(drawn["box"][i, 0, 1]), int(drawn["box"][i, 0, 3])
        canvas = F.pad(drawn["wave"][i, 0], (2000, 2000))[left + 2000:left + 2000 + width]
        ref = F.interpolate(canvas[None, None], size=d.clip, mode="linear", align_corners=False)[0]
        torch.testing.assert_close(got[i], ref, atol=1e-4, rtol=0)


def test_preprocess_and_the_raw_baseline():
    d = wave_domain()
    x = torch.randn(3, 9000) * 0.1  # shorter clips: zero-padded, centred
    assert d.preprocess(x).shape == (3, 1, d.clip)
    torch.testing.assert_close(d.preprocess(x)[:, 0, 3500:12500], x)
    log_mel = AudioDomain(state=d.state())
    torch.testing.assert_close(d.raw_features(x), log_mel.raw_features(x))  # the baseline is the log-mel's


@pytest.mark.parametrize("objective", ["simclr", "mae", "cpc", "dino"])
def test_every_family_trains_on_the_waveform(tiny, objective):
    cfg = tiny.config("domain=audio", "domain.input=waveform", f"objective={objective}", "data.batch_size=8")
    assert check_step(cfg, build_domain(cfg))["parameters"] > 0


@pytest.mark.parametrize("kw, says", [(dict(input="mfcc"), "domain.input must be logmel or waveform"),
                                      (dict(frame=(400,)), r"domain.frame must be \[window, hop\]"),
                                      (dict(frame=(20000, 320)), "must fit in a clip"),
                                      (dict(frame=(6000, 320), local_seconds=0.3), "local_seconds")])
def test_bad_settings_are_one_line(kw, says):
    with pytest.raises(UserError, match=says) as e:
        AudioDomain(**{"input": "waveform", **kw})
    assert "\n" not in str(e.value)
