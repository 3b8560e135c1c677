"""Verified downloads into the cache: http(s)://, file:// and hf://ORG/REPO[/PATH].

A file lands in the cache only complete and with the expected sha256: it is written to a private
temporary name beside its destination, checked, then renamed into place (atomic on one file system).
A per-file lock makes concurrent processes download it once; the others wait and reuse it. A cached
file is hashed again every time it is used, so a file damaged on disk is never loaded.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse


CHUNK = 1 << 16


class ZooDownloadError(RuntimeError):
    pass


def cache_dir() -> Path:
    if os.environ.get("SEZOO_CACHE"):
        return Path(os.environ["SEZOO_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sezoo"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch_http(url: str, out, expected_size: int | None, timeout: float) -> None:
    import requests  # here, not at the top: listing the zoo needs no HTTP stack

    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise ZooDownloadError(f"{url}: HTTP {response.status_code} {response.reason}")
            received = 0
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                received += len(chunk)
    except requests.exceptions.RequestException as err:
        raise ZooDownloadError(f"{url}: the download broke off ({type(err).__name__}: {err})") from err
    if expected_size is not None and received != expected_size:
        raise ZooDownloadError(f"{url}: received {received} of {expected_size} bytes; the connection was cut")


def _fetch_file(url: str, out) -> None:
    source = Path(unquote(urlparse(url).path))
    if not source.is_file():
        raise ZooDownloadError(f"{url}: no such file")
    with source.open("rb") as handle:
        shutil.copyfileobj(handle, out, CHUNK)


def _fetch_hf(url: str, out) -> None:
    from huggingface_hub import hf_hub_download

    parts = url[len("hf://"):].split("/")
    if len(parts) < 3:
        raise ZooDownloadError(f"{url}: expected hf://ORG/REPO/PATH")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        local = hf_hub_download(repo_id=repo, filename=filename)
    except Exception as err:  # huggingface_hub raises many types (offline, 404, auth)
        raise ZooDownloadError(f"{url}: Hugging Face download failed ({type(err).__name__}: {err})") from err
    with open(local, "rb") as handle:
        shutil.copyfileobj(handle, out, CHUNK)


def join_url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def fetch(url: str, destination: Path, sha256: str, size: int | None = None, timeout: float = 60.0) -> Path:
    """Make ``destination`` a verified copy of ``url`` (downloading only if needed) and return it."""
    destination = Path(destination)
    with _locked(destination):
        if destination.exists():
            if sha256_of(destination) == sha256:
                return destination
            destination.unlink()  # damaged on disk: fetch it again rather than load it
        scheme = urlparse(url).scheme
        fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                if scheme in ("http", "https"):
                    _fetch_http(url, out, size, timeout)
                elif scheme == "file":
                    _fetch_file(url, out)
                elif scheme == "hf":
                    _fetch_hf(url, out)
                else:
                    raise ZooDownloadError(f"{url}: unsupported scheme {scheme!r} (http, https, file, hf)")
            actual_size = tmp.stat().st_size
            if size is not None and actual_size != size:
                raise ZooDownloadError(f"{url}: got {actual_size} bytes, the registry says {size}; discarded")
            actual = sha256_of(tmp)
            if actual != sha256:
                raise ZooDownloadError(f"{url}: sha256 {actual} does not match the registry's {sha256}; the file "
                                       f"was discarded. The mirror holds a different file: check SEZOO_ZOO_URL.")
            os.replace(tmp, destination)
        finally:
            tmp.unlink(missing_ok=True)
    return destination
