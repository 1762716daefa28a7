"""The Fisher-approximation errors of ntk_ngd.factored.block_error against a dense oracle: the explicit layer block
F = (1/N) Σ_n (h h^T) ⊗ S_n built from the same features, and each approximation built densely (Kronecker product,
SVD of the rearranged block, eigenbasis diagonal, diagonal)."""
import jax
import numpy as np
import pytest

from ntk_ngd import losses
from ntk_ngd.factored import block_error
from ntk_ngd.factored.features import whitened_features
from ntk_ngd.networks import mlp


def dense_errors(H, D) -> dict:
    n, d = H.shape
    m = D.shape[-1]
    S = np.einsum("nkm,nkp->nmp", D, D)
    F = sum(np.kron(np.outer(h, h), s) for h, s in zip(H, S)) / n
    A, G = H.T @ H / n, S.mean(axis=0)

    def rel(M):
        return np.linalg.norm(F - M) / np.linalg.norm(F)

    def unvec(u, v):
        return np.kron(u.reshape(d, d), v.reshape(m, m))

    R = F.reshape(d, m, d, m).transpose(0, 2, 1, 3).reshape(d * d, m * m)  # Van Loan–Pitsianis rearrangement
    U, sv, Vt = np.linalg.svd(R)
    rank1 = sv[0] * unvec(U[:, 0], Vt[0])
    U2, s2, V2 = np.linalg.svd(R - np.outer(A.ravel(), G.ravel()))
    Q = np.kron(np.linalg.eigh(A)[1], np.linalg.eigh(G)[1])
    return {"kfac": rel(np.kron(A, G)), "kpsvd1": rel(rank1), "kpsvd2": rel(rank1 + sv[1] * unvec(U[:, 1], Vt[1])),
            "kfac_cor": rel(np.kron(A, G) + s2[0] * unvec(U2[:, 0], V2[0])),
            "ekfac": rel(Q @ np.diag(np.diag(Q.T @ F @ Q)) @ Q.T), "diag": rel(np.diag(np.diag(F)))}


@pytest.mark.parametrize("seed", [0, 1])
def test_errors_match_the_dense_oracle_on_random_features(seed):
    rng = np.random.default_rng(seed)
    H, D = rng.normal(size=(6, 5)), rng.normal(size=(6, 3, 4))
    ours, dense = block_error.layer_errors(H, D), dense_errors(H, D)
    assert set(ours) == set(block_error.APPROXIMATIONS)
    for name in ours:
        assert abs(ours[name] - dense[name]) <= 1e-12, (name, ours[name], dense[name])


def test_errors_match_the_dense_oracle_on_a_network():
    """The features of a real net (bias appended, NTK scaling, MSE whitening) through both routes, every layer; the
    readout block is A ⊗ I (every Kronecker fit exact, e at the rounding level)."""
    net = mlp(depth=3, width=[6, 5], in_dim=4, out_dim=3, activation="relu")
    X = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (7, 4)))
    feats = whitened_features(net, net.init(0), X, np.zeros((7, 3)), losses.get("mse"))
    for l, (H, D) in enumerate(zip(feats.inputs, feats.deltas)):
        ours, dense = block_error.layer_errors(H, D), dense_errors(np.asarray(H), np.asarray(D))
        for name in ours:
            assert abs(ours[name] - dense[name]) <= 1e-7, (l, name, ours[name], dense[name])
    assert block_error.layer_errors(*(np.asarray(a) for a in (feats.inputs[-1], feats.deltas[-1])))["kfac"] <= 1e-7


def test_a_dead_layer_has_no_error():
    errs = block_error.layer_errors(np.zeros((3, 2)), np.ones((3, 1, 2)))
    assert all(np.isnan(v) for v in errs.values())
