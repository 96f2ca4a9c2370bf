"""Spectral diagnostics of embeddings Z [n m] (n samples, m dimensions): effective rank, and the sample- and
dimension-contrastive criteria of Garrido et al. 2023 ("On the duality between contrastive and non-contrastive
self-supervised learning"). With K = Z^T [m n]:

    L_c  = ||K^T K - diag(K^T K)||_F^2    off-diagonal Gram (n x n): sample-contrastive
    L_nc = ||K K^T - diag(K K^T)||_F^2    off-diagonal covariance (m x m): dimension-contrastive

Everything is computed from sums over samples (C = Z^T Z, sum of ||z||^4), so the n x n Gram of a large evaluation
set is never formed: ||K^T K||_F^2 = ||K K^T||_F^2 (both are the sum of sigma^4), hence

    L_c = ||C||_F^2 - sum_i ||z_i||^4,    L_nc = ||C||_F^2 - sum_j C_jj^2    (Theorem 3.3 rearranged).

Sums are in float64: the two terms of L_c nearly cancel for spread-out unit embeddings."""
import torch
import torch.nn.functional as F


def moments(z: torch.Tensor) -> dict:
    """The sums over the rows of z [n m] that the diagnostics need, in float64."""
    z = z.detach().double()
    return {"n": len(z), "c": z.T @ z, "q": z.pow(2).sum(1).pow(2).sum()}  # c [m m]; q = sum_i ||z_i||^4


def unit_embeddings(z: torch.Tensor) -> torch.Tensor:
    """Each embedding (row) scaled to unit norm: the normalisation of sample-contrastive methods."""
    return F.normalize(z.detach().double(), dim=1)


def centred_unit_dimensions(z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Each dimension (column) centred and scaled to unit norm: the normalisation of dimension-contrastive methods. A
    constant dimension stays zero."""
    centred = z.detach().double() - z.detach().double().mean(0)
    return centred / centred.norm(dim=0).clamp_min(eps)


def duality_losses(z: torch.Tensor) -> tuple[float, float]:
    """(L_c, L_nc) of z [n m] as given (normalise first: `unit_embeddings`, `centred_unit_dimensions`)."""
    s = moments(z)
    frob = s["c"].pow(2).sum()  # ||Z^T Z||_F^2 = ||Z Z^T||_F^2
    return float(frob - s["q"]), float(frob - s["c"].diagonal().pow(2).sum())


def singular_values(z: torch.Tensor) -> torch.Tensor:
    """The singular values of z [n m], largest first, in float64: [min(n, m)]. From z itself, not the eigenvalues of
    Z^T Z, whose square roots turn rounding noise (1e-16) into singular values of 1e-8."""
    return torch.linalg.svdvals(z.detach().double())


def effective_rank(z: torch.Tensor) -> float:
    """Roy & Vetterli 2007: exp of the entropy of the singular values normalised to sum 1 (0 log 0 = 0). Between 1
    (one direction) and min(n, m) (a flat spectrum); 0 for an all-zero matrix."""
    sv = singular_values(z)
    if sv.sum() <= 0:
        return 0.0
    p = sv / sv.sum()
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))


def diagnostics(rep: torch.Tensor, proj: torch.Tensor | None = None) -> dict:
    """Effective ranks of the representation and of the projector output, and the duality criteria of the projector
    output (the representation's when there is no projector) under both normalisations."""
    z = rep if proj is None else proj
    l_c, l_nc = duality_losses(unit_embeddings(z))
    l_c_dims, l_nc_dims = duality_losses(centred_unit_dimensions(z))
    out = {"erank": effective_rank(rep), "duality/l_c": l_c, "duality/l_nc": l_nc,
           "duality/l_c_dims": l_c_dims, "duality/l_nc_dims": l_nc_dims}
    return out | ({} if proj is None else {"erank_proj": effective_rank(proj)})


def rank_difference(online: torch.Tensor, target: torch.Tensor) -> dict:
    """The rank differential of Zhuo et al. 2023: effective ranks of the two branches' outputs [n k] and target
    minus online (positive where the asymmetry keeps the target's rank above the online branch's)."""
    on, tg = effective_rank(online), effective_rank(target)
    return {"rdm/erank_online": on, "rdm/erank_target": tg, "rdm/diff": tg - on}
