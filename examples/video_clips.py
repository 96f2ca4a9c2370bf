"""Pretrain a video encoder on clips saved as arrays, then tell which way things move from its embeddings.

    python examples/video_clips.py                           # SimCLR on tubelet tokens, 300 steps
    python examples/video_clips.py objective=mae "domain.tubelet=[2,16,16]" domain.norm_pix_loss=false encoder.pool=mean

The clips here are moving digits written to an .npz (video [N, T, H, W] uint8 and a label per clip: the direction
of motion); a folder of .mp4 files works the same way (pip install "multissl[video]" to decode them).
"""
import sys

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

import multissl
from multissl.cli import load_config
from multissl.domains.video.moving import moving_digits
from multissl.train import run

clips = moving_digits(n=600, frames=16, size=32, seed=0)
video, direction = clips["video"][:, :, 0], clips["direction"]  # [n t h w] grayscale, 8 directions
np.savez("clips.npz", video=video[:500], label=direction[:500], test_video=video[500:], test_label=direction[500:])

overrides = sys.argv[1:] or ["objective=simclr", "trainer.max_steps=300", "domain.flip=0"]
folder = run(load_config(["domain=video", "data.path=clips.npz", "run.dir=runs/video-example", *overrides]))

encoder = multissl.load_encoder(folder)  # weights + frames, stride, size and statistics
x_tr, x_te = encoder.embed(list(video[:500])).numpy(), encoder.embed(list(video[500:])).numpy()  # clips in, [n d] out
for name, a, b in [("ssl embeddings", x_tr, x_te), ("raw clips", video[:500].reshape(500, -1),
                                                      video[500:].reshape(100, -1))]:
    acc = KNeighborsClassifier(20).fit(a, direction[:500]).score(b, direction[500:])
    print(f"direction of motion, 20-NN on {name}: {acc:.3f} (chance 0.125)")
