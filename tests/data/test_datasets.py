import hashlib
import os

import numpy as np
import pytest
import torch
from repro import data


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.cpu().numpy().tobytes()).hexdigest()[:16]


def test_mnist1d_shapes_and_cache(tmp_path):
    s = data.mnist1d()
    assert s.x_train.shape == (4000, 40) and s.x_test.shape == (1000, 40) and s.num_classes == 10
    assert (tmp_path / "mnist1d.npz").exists()
    again = data.mnist1d()
    assert torch.equal(s.x_train, again.x_train)


def test_mnist5k_split_is_stratified_and_fixed():
    s = data.mnist5k()
    assert s.x_train.shape == (4000, 784) and s.x_test.shape == (1000, 784)
    assert 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0
    assert torch.bincount(s.y_test).tolist() == [100] * 10
    assert sha(s.y_train) == sha(data.mnist5k().y_train)


def test_digits():
    s = data.digits()
    assert s.x_train.shape[1] == 64 and len(s.x_train) + len(s.x_test) == 1797


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_matches_official_shapes():
    s = data.fashion_mnist()
    assert s.x_train.shape == (60000, 784) and s.x_test.shape == (10000, 784)
    assert torch.bincount(s.y_train).tolist() == [6000] * 10


def test_fashion_mnist_missing_names_the_install_command(tmp_path):
    with pytest.raises(data.MissingDataError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist(root=tmp_path / "nowhere")


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    (tmp_path / "a.idx").write_bytes(header + arr.tobytes())
    assert np.array_equal(data.read_idx(tmp_path / "a.idx"), arr)
