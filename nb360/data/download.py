"""Streaming, resumable, verified HTTP downloads.

The file is written to ``<dest>.part`` (resumed with an HTTP ``Range`` request after an interruption, retried
with exponential backoff) and renamed to ``dest`` only after its size and sha256 match, so a failed or
killed download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A download failed for good. The message names the URL, the file and what to do."""


@dataclass(frozen=True)
class DownloadOptions:
    retries: int = 5
    backoff_s: float = 2.0  # waits backoff, 2*backoff, 4*backoff ... (capped at max_backoff_s)
    max_backoff_s: float = 60.0
    timeout_s: float = 60.0
    chunk_bytes: int = 1 << 20
    progress_every_s: float = 10.0


def _hash_prefix(path: Path) -> hashlib._Hash:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h


def download(
    url: str,
    dest: str | os.PathLike,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    options: DownloadOptions | None = None,
) -> str:
    """Download ``url`` to ``dest``; return the file's sha256.

    With ``expected_sha256`` the bytes must match it (else the partial file is discarded and the download
    retried, then :class:`DownloadError`). Without it the caller records the returned digest.
    """
    opts = options or DownloadOptions()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(opts.retries + 1):
        if attempt:
            wait = min(opts.max_backoff_s, opts.backoff_s * 2 ** (attempt - 1))
            log.warning(
                "retrying %s in %.1f s (attempt %d of %d): %s",
                url,
                wait,
                attempt + 1,
                opts.retries + 1,
                last_error,
            )
            time.sleep(wait)
        try:
            digest = _attempt(url, part, expected_size, opts)
        except (urllib.error.URLError, OSError, TimeoutError, _Incomplete) as e:
            last_error = e
            continue
        if expected_sha256 is not None and digest != expected_sha256:
            last_error = DownloadError(f"sha256 mismatch: got {digest}, expected {expected_sha256}")
            part.unlink(missing_ok=True)  # corrupt bytes: resuming would keep them
            continue
        os.replace(part, dest)
        log.info("downloaded %s -> %s (sha256 %s)", url, dest, digest)
        return digest
    part_note = f" The partial file {part} is kept so a later run resumes it." if part.exists() else ""
    raise DownloadError(
        f"could not download {url} to {dest} after {opts.retries + 1} attempts: {last_error}.{part_note} "
        f"If the server no longer serves it, fetch the file by hand and place it at {dest}."
    )


class _Incomplete(Exception):
    pass


def _attempt(url: str, part: Path, expected_size: int | None, opts: DownloadOptions) -> str:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "nb360-pipeline"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=opts.timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # The partial file already holds everything the server has: check it as it is.
            return _finish(part, expected_size, total=None)
        if 400 <= e.code < 500 and e.code not in (408, 429):
            raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}") from e
        raise
    with resp:
        status = resp.status
        if status == 206 and have:
            h = _hash_prefix(part)
            mode = "ab"
            rng = resp.headers.get("Content-Range", "")  # bytes a-b/total
            total = int(rng.rsplit("/", 1)[1]) if "/" in rng and not rng.endswith("*") else None
            if not rng.startswith(f"bytes {have}-"):
                raise _Incomplete(f"server resumed at the wrong offset ({rng!r}, wanted {have})")
        else:
            # 200: the server ignored the range (or this is a fresh start): start over.
            h, mode, have = hashlib.sha256(), "wb", 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(f"{url} has {total} bytes, expected {expected_size}")
        done, t_last = have, time.time()
        with open(part, mode) as f:
            while True:
                chunk = resp.read(opts.chunk_bytes)
                if not chunk:
                    break
                f.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if time.time() - t_last >= opts.progress_every_s:
                    t_last = time.time()
                    pct = f" ({100 * done / total:.1f} %)" if total else ""
                    log.info("%s: %.1f MB%s", part.name, done / 1e6, pct)
    if total is not None and done != total:
        raise _Incomplete(f"connection closed after {done} of {total} bytes")
    return _finish(part, expected_size, total, h)


def _finish(part: Path, expected_size: int | None, total: int | None, h: hashlib._Hash | None = None) -> str:
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        raise _Incomplete(f"{part} has {size} bytes, expected {expected_size}")
    return (h or _hash_prefix(part)).hexdigest()
