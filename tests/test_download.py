import hashlib
import logging

import pytest

from nb360.data.download import DownloadError, DownloadOptions, download
from tests.httpserver import FaultyServer

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAST = DownloadOptions(retries=2, backoff_s=0.01, timeout_s=5, chunk_bytes=64 * 1024, progress_every_s=0)


@pytest.fixture
def server():
    with FaultyServer({"f.bin": PAYLOAD}) as s:
        yield s


def test_good_download_is_verified_and_renamed(server, tmp_path, caplog):
    dest = tmp_path / "f.bin"
    with caplog.at_level(logging.INFO):
        assert download(f"{server.url}/good/f.bin", dest, expected_sha256=SHA, options=FAST) == SHA
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()
    assert any("MB" in r.message for r in caplog.records), "progress is logged"


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "f.bin"
    assert download(f"{server.url}/interrupt/f.bin", dest, expected_sha256=SHA, options=FAST) == SHA
    assert dest.read_bytes() == PAYLOAD
    ranges = [r for p, r in server.requests if p == "/interrupt/f.bin"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(PAYLOAD) // 2}-"


def test_partial_file_from_a_killed_run_is_resumed(server, tmp_path):
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1000])
    assert download(f"{server.url}/good/f.bin", dest, expected_sha256=SHA, options=FAST) == SHA
    assert server.requests[0][1] == "bytes=1000-"
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"garbage")
    assert download(f"{server.url}/norange/f.bin", dest, expected_sha256=SHA, options=FAST) == SHA
    assert dest.read_bytes() == PAYLOAD


def test_truncated_response_fails_without_a_complete_looking_file(server, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"closed after \d+ of \d+ bytes"):
        download(f"{server.url}/truncated/f.bin", dest, expected_sha256=SHA, options=FAST)
    assert not dest.exists()


def test_corrupt_bytes_fail_the_checksum_and_leave_nothing(server, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(f"{server.url}/corrupt/f.bin", dest, expected_sha256=SHA, options=FAST)
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()
    assert len([p for p, _ in server.requests if p == "/corrupt/f.bin"]) == FAST.retries + 1


def test_transient_errors_are_retried(server, tmp_path):
    dest = tmp_path / "f.bin"
    assert download(f"{server.url}/flaky/f.bin", dest, expected_sha256=SHA, options=FAST) == SHA


def test_missing_file_fails_at_once_with_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match="404") as e:
        download(f"{server.url}/good/nope.bin", tmp_path / "nope.bin", options=FAST)
    assert "/good/nope.bin" in str(e.value)
    assert len(server.requests) == 1, "a 404 is not retried"
