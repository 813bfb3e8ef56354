"""untar_data against a local HTTP server on 127.0.0.1: resume, checksums, errors, unsafe archives."""
import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from pets.data.download import DownloadError, URLs, untar_data


def make_archive(members):
    """A .tgz in memory; members maps a name to bytes, or to ('symlink', target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


GOOD = make_archive({f'tiny-pets/images/cat_{i}.jpg': bytes([i]) * 5000 for i in range(40)})


class Server:
    """Serves /name.tgz from `files`; can drop the connection once halfway through a file."""

    def __init__(self):
        self.files, self.requests, self.drop_once = {}, [], set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip('/')
                server.requests.append((name, self.headers.get('Range')))
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                if self.headers.get('Range'):
                    start = int(self.headers['Range'].split('=')[1].rstrip('-'))
                    self.send_response(206)
                    self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
                else:
                    self.send_response(200)
                self.send_header('Content-Length', str(len(body) - start))
                self.end_headers()
                if name in server.drop_once:
                    server.drop_once.discard(name)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def test_download_extract_and_return_at_once_when_there(server, tmp_path):
    server.files['tiny-pets.tgz'] = GOOD
    path = untar_data(f'{server.url}/tiny-pets.tgz', data=tmp_path, md5=hashlib.md5(GOOD).hexdigest(), size=len(GOOD))
    assert path == tmp_path / 'tiny-pets' and len(list((path / 'images').iterdir())) == 40
    assert (path / 'images' / 'cat_3.jpg').read_bytes() == bytes([3]) * 5000
    n_requests = len(server.requests)
    assert untar_data(f'{server.url}/tiny-pets.tgz', data=tmp_path) == path
    assert len(server.requests) == n_requests  # already extracted: no network at all


def test_a_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.files['tiny-pets.tgz'] = GOOD
    server.drop_once.add('tiny-pets.tgz')
    path = untar_data(f'{server.url}/tiny-pets.tgz', data=tmp_path, md5=hashlib.md5(GOOD).hexdigest())
    assert len(list((path / 'images').iterdir())) == 40
    assert server.requests[0][1] is None and server.requests[1][1] == f'bytes={len(GOOD) // 2}-'


def test_interrupted_download_keeps_the_part_and_the_next_call_resumes(server, tmp_path):
    server.files['tiny-pets.tgz'] = GOOD
    server.drop_once.add('tiny-pets.tgz')
    with pytest.raises(DownloadError, match=r"failed after 1 attempts.*tiny-pets\.tgz\.part.*call again to resume"):
        untar_data(f'{server.url}/tiny-pets.tgz', data=tmp_path, retries=0)
    assert (tmp_path / 'tiny-pets.tgz.part').stat().st_size == len(GOOD) // 2
    untar_data(f'{server.url}/tiny-pets.tgz', data=tmp_path, retries=0, md5=hashlib.md5(GOOD).hexdigest())
    assert server.requests[-1][1] == f'bytes={len(GOOD) // 2}-'


def test_checksum_mismatch_deletes_the_file_and_says_so(server, tmp_path):
    server.files['tiny-pets.tgz'] = GOOD
    with pytest.raises(DownloadError, match="expected 0123.*corrupt and was deleted"):
        untar_data(f'{server.url}/tiny-pets.tgz', data=tmp_path, md5='0123' * 8)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match="expected 7.*deleted"):
        untar_data(f'{server.url}/tiny-pets.tgz', data=tmp_path, size=7)


def test_404_names_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"missing\.tgz failed: HTTP 404"):
        untar_data(f'{server.url}/missing.tgz', data=tmp_path)


@pytest.mark.parametrize('members', [
    {'/etc/evil.txt': b'x'},
    {'pets/../../evil.txt': b'x'},
    {'pets/link': ('symlink', '/etc/passwd')},
    {'pets/link': ('symlink', '../../outside')},
], ids=['absolute', 'dotdot', 'absolute-link', 'link-outside'])
def test_unsafe_archives_are_refused_and_leave_nothing(server, tmp_path, members):
    server.files['evil.tgz'] = make_archive({'pets/images/ok.jpg': b'fine', **members})
    with pytest.raises(DownloadError, match="unsafe and was not extracted"):
        untar_data(f'{server.url}/evil.tgz', data=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['evil.tgz']  # no folder, no staging left behind
    assert not (tmp_path.parent / 'evil.txt').exists()


def test_embedded_sample_works_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('PETS_DATA', str(tmp_path))
    path = untar_data(URLs.PETS_SAMPLE)
    assert path == tmp_path / 'oxford-pets-sample'
    assert len(list((path / 'images').glob('*.jpg'))) == 370 and (path / 'ATTRIBUTION.md').exists()


def test_the_pets_archive_is_known_with_its_checksum():
    from pets.data.download import KNOWN_ARCHIVES
    archive = KNOWN_ARCHIVES[URLs.PETS]
    assert (archive.name, archive.size, archive.md5) == ('oxford-iiit-pet', 811_706_944,
                                                         'e4db5c768afd933bb91f5f594d7417a4')
