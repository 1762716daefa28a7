"""`ntk-ngd doctor`: reports, self-check passes, and the self-check can fail."""
from __future__ import annotations

import dataclasses
import json
from importlib import metadata

import pytest

import ntk_ngd
from ntk_ngd import cli, kernels


def _installed(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _run(capsys, argv):
    code = cli.main(argv)
    return code, capsys.readouterr()


def test_doctor_json_passes(capsys):
    code, out = _run(capsys, ["doctor", "--json"])
    assert code == 0, out.err
    info = json.loads(out.out)
    assert info["status"] == "PASS"
    checks = info["self_check"]["checks"]
    assert len(checks) >= 3
    for c in checks:
        assert c["pass"] and 0 <= c["max_rel_err"] <= 1e-10, c
    assert info["float64"] is True
    v = info["versions"]
    assert v["ntk_ngd"] == ntk_ngd.__version__
    assert v["jax"] == metadata.version("jax") and v["neural-tangents"] == _installed("neural-tangents")
    backend = info["kernel_backend"]
    assert backend == ntk_ngd.backends.active()._asdict() and backend["name"] in ("neural_tangents", "jax")
    assert backend["reason"] and "\n" not in backend["reason"]
    for key in ("python", "jaxlib", "numpy", "scipy"):
        assert v[key]
    assert info["jax_backend"] in ("cpu", "gpu", "cuda", "tpu")
    assert info["jax_devices"]
    assert isinstance(info["cuda_plugins"], dict)


def test_doctor_fails_on_wrong_kernels(capsys, monkeypatch):
    """A 1e-6 relative error in the Gram-form blocks must turn the self-check to FAIL."""
    real = kernels.layer_kernels

    def perturbed(*args, **kw):
        lk = real(*args, **kw)
        if kw.get("params") is None:
            return lk
        return dataclasses.replace(lk, ntk=lk.ntk * (1 + 1e-6))

    monkeypatch.setattr(kernels, "layer_kernels", perturbed)
    code, out = _run(capsys, ["doctor"])
    assert code == 1
    assert "FAIL" in out.out.splitlines()[-1]


def test_doctor_text_and_help(capsys):
    code, out = _run(capsys, ["doctor", "--no-check"])
    assert code == 0
    for word in ("jax", "neural-tangents", "kernel backend", "float64", "CUDA plugin", "jax devices"):
        assert word in out.out
    with pytest.raises(SystemExit) as info:
        cli.main(["doctor", "--help"])
    assert info.value.code == 0
    assert "self-check" in capsys.readouterr().out
