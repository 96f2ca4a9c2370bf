"""Feature tokens against a hand computation."""
import torch

from multissl.domains.features import FeatureTokenizer


def test_tokenizer_matches_a_hand_computation():
    torch.manual_seed(0)
    tok = FeatureTokenizer([0, 3, 0, 2], 4)  # numeric, 3-way, numeric, 2-way
    x = torch.tensor([[0.5, 2.0, float("nan"), 3.0], [-1.0, 0.0, 2.0, 1.0]])
    out = tok(x)
    assert out.shape == (2, 4, 4)
    W, M, B, E = tok.weight, tok.missing, tok.bias, tok.embed.weight  # E rows: column 1 ids 0..4, column 3 ids 0..3
    torch.testing.assert_close(out[0, 0], 0.5 * W[0] + B[0])
    torch.testing.assert_close(out[0, 2], M[1] + B[2])  # missing numeric
    torch.testing.assert_close(out[1, 2], 2.0 * W[1] + B[2])
    torch.testing.assert_close(out[0, 1], E[2] + B[1])
    torch.testing.assert_close(out[1, 1], E[0] + B[1])  # unknown id
    torch.testing.assert_close(out[0, 3], E[5 + 3] + B[3])  # column 3's block starts after column 1's 5 ids
    torch.testing.assert_close(out[1, 3], E[5 + 1] + B[3])  # missing id
    assert E.shape[0] == 5 + 4
