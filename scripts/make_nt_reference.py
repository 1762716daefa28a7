"""Regenerate tests/data/nt_reference.npz: neural-tangents' values that the pure-jax backend
(ntk_ngd.backends) is checked against where neural-tangents cannot be imported.

For each case (activation ∈ relu/erf/linear/gelu, depth 1–4, bias on/off; in_dim 3, hidden
widths (5, 4, 6)[:depth − 1], out_dim 2, σ_w = 1.3, σ_b = 0.4) it stores, under the key prefix
"<activation>/d<depth>/b<0|1>/":

* ``fwd``, ``bwd``: NT's per-layer infinite-width kernels between X (6 rows, two of them
  coincident, so the ReLU cusp is exercised) and X2 (4 rows, one equal to a row of X);
* ``ntk``, ``nngp``: NT's ``kernel_fn(X, X2, ("ntk", "nngp"))`` of the whole network;
* ``W<l>``, ``b<l>``: NT's ``init_fn`` parameters for PRNGKey(SEED) (``b<l>`` absent without bias);
* ``apply``: NT's ``apply_fn`` at those parameters on X.

plus ``X``, ``X2`` and ``meta`` (a JSON string: versions, the settings above). Everything comes
from NT's stax directly (tests/_nt_oracle.py), not through ntk_ngd. Needs the NT stack (jax 0.4.x):
``python scripts/make_nt_reference.py [out.npz]``.
"""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import _nt_oracle  # noqa: E402

ACTS = ("relu", "erf", "linear", "gelu")
DEPTHS = (1, 2, 3, 4)
HIDDEN = (5, 4, 6)
IN_DIM, OUT_DIM, W_STD, B_STD, SEED = 3, 2, 1.3, 0.4, 7


def inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2024)
    X = rng.standard_normal((6, IN_DIM))
    X[5] = X[2]  # a coincident pair inside X
    X2 = rng.standard_normal((4, IN_DIM))
    X2[0] = X[0]  # and one shared with X2
    return X, X2


def case_key(act: str, depth: int, bias: bool) -> str:
    return f"{act}/d{depth}/b{int(bias)}/"


def main(out: Path) -> None:
    import importlib.metadata as md

    X, X2 = inputs()
    data = {"X": X, "X2": X2}
    for act, depth, bias in itertools.product(ACTS, DEPTHS, (False, True)):
        key = case_key(act, depth, bias)
        layers = _nt_oracle.layers(act, HIDDEN[: depth - 1], OUT_DIM, bias, W_STD, B_STD)
        fwd, bwd = _nt_oracle.layer_grams(layers, W_STD, X, X2)
        ntk, nngp = _nt_oracle.kernel_fn(layers)(X, X2, ("ntk", "nngp"))
        params = _nt_oracle.init(layers, SEED, IN_DIM)
        data.update({key + "fwd": fwd, key + "bwd": bwd, key + "ntk": ntk, key + "nngp": nngp,
                     key + "apply": _nt_oracle.apply(layers, params, X)})
        for l, (W, b) in enumerate(params[::2]):
            data[key + f"W{l}"] = W
            if b is not None:
                data[key + f"b{l}"] = b
    meta = {"neural_tangents": md.version("neural-tangents"), "jax": jax.__version__,
            "jaxlib": md.version("jaxlib"), "acts": ACTS, "depths": DEPTHS, "hidden": HIDDEN,
            "in_dim": IN_DIM, "out_dim": OUT_DIM, "w_std": W_STD, "b_std": B_STD, "seed": SEED,
            "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable)}
    data = {k: np.asarray(v, dtype=np.float64) for k, v in data.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, meta=np.array(json.dumps(meta)), **data)
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(data)} arrays): {meta}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "data" / "nt_reference.npz")
