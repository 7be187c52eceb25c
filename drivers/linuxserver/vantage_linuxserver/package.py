"""The SE package copied to Linux servers: a wheel of the installed Vantage source tree plus the
wheels of every dependency, so hosts install offline (`pip install --no-index`). Built into
`<state_path>/linuxserver/wheelhouse-<hash of the source>/` and reused, across controller
restarts too, while the source does not change. Building takes a while (pip builds a wheel
and downloads the dependencies' wheels), so the driver starts it in the background as soon as
the cloud's configuration checks out (`build_in_background`); a create waits for that build
instead of starting its own."""
from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import vantage
from vantage.cloud.base import CloudError

LOG = logging.getLogger("vantage_linuxserver.package")

_lock = threading.Lock()
#: wheelhouse directory by source hash, built by this process
_built: dict[str, Path] = {}
#: state path -> the thread building its wheelhouse in the background
_background: dict[str, threading.Thread] = {}
_background_lock = threading.Lock()

_SOURCE_FILES = ("setup.cfg", "pyproject.toml", "README.md")


def source_root() -> Path:
    """The source tree Vantage runs from (an editable install or a checkout).

    :raises CloudError: when Vantage was installed from a wheel (no source tree to build).
    """
    root = Path(vantage.__file__).resolve().parent.parent
    if not (root / "setup.cfg").is_file():
        raise CloudError(f"the Linux server cloud builds the SE package from Vantage's source "
                         f"tree, and {root} has no setup.cfg; install the controller from a "
                         "source checkout (pip install -e .)")
    return root


def _source_hash(root: Path) -> str:
    digest = hashlib.sha256()
    files = [root / name for name in _SOURCE_FILES if (root / name).is_file()]
    files += sorted(p for p in (root / "vantage").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise CloudError(f"cannot {what}: `{' '.join(command)}` exited with "
                         f"{result.returncode}: {(result.stdout + result.stderr).strip()[-800:]}")


def build_in_background(state_path: str) -> None:
    """Start building the wheelhouse in a daemon thread, unless a build for `state_path` runs
    or ran in this process. A failure is logged; the next `wheelhouse()` call raises it."""
    with _background_lock:
        thread = _background.get(state_path)
        if thread is not None:
            return
        thread = threading.Thread(target=_build_quietly, args=(state_path,), daemon=True,
                                  name="se-package-build")
        _background[state_path] = thread
        thread.start()


def _build_quietly(state_path: str) -> None:
    try:
        wheelhouse(state_path)
    except CloudError as exc:
        LOG.warning("building the SE package in the background failed (a create will try "
                    "again): %s", exc.reason)
    except Exception:  # a thread has nobody else to tell
        LOG.exception("building the SE package in the background failed")


def wheelhouse(state_path: str) -> Path:
    """A directory with the `vantage` wheel and all its dependencies' wheels.

    :raises CloudError: when the wheel cannot be built or a dependency downloaded.
    """
    root = source_root()
    with _lock:
        key = _source_hash(root)
        if key in _built and _built[key].is_dir():
            return _built[key]
        base = Path(state_path) / "linuxserver"
        target = base / f"wheelhouse-{key}"
        if (target / ".complete").is_file():
            _built[key] = target
            return target
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in base.glob("build-*"):  # left by a controller stopped mid-build
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=base, prefix="build-") as tmp:
            # build from a copy: an in-tree build would leave build/ in the checkout
            src = Path(tmp) / "src"
            shutil.copytree(root / "vantage", src / "vantage",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            for name in _SOURCE_FILES:
                if (root / name).is_file():
                    shutil.copy2(root / name, src / name)
            out = Path(tmp) / "wheels"
            LOG.info("building the SE package from %s", root)
            _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                  str(src)], "build the vantage wheel")
            wheel = next(out.glob("vantage-*.whl"))
            _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                  "-d", str(out), str(wheel)], "download the SE's dependencies")
            (out / ".complete").write_text(key)
            for stale in base.glob("wheelhouse-*"):
                shutil.rmtree(stale, ignore_errors=True)
            out.rename(target)
        _built[key] = target
        return target
