"""Getting the data: `untar_data(URLs.PETS)` downloads, checks and unpacks a data set, once.

    path = untar_data(URLs.PETS)         # the full Oxford-IIIT Pet archive (811 MB), as in the book
    path = untar_data(URLs.PETS_SAMPLE)  # the 370-image sample shipped inside this package, offline

Both return a folder holding `images/`. Data lives in ~/.pets/data, or wherever the environment variable
PETS_DATA points. A download is written to `<name>.tgz.part` and renamed only once complete and verified,
so an interrupted one resumes (an HTTP Range request) instead of starting over, and a corrupt one never
looks finished. Extraction goes to a temporary folder renamed at the end, and refuses any archive member
that would land outside it (absolute paths, `..`, links pointing out).
"""
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

SAMPLE_FOLDER = Path(__file__).parent / 'sample' / 'oxford-pets-sample'


class ItemList(list):
    """A list that prints as fastai's L does: its length, then its first ten items."""

    def __repr__(self):
        shown = ', '.join(repr(x) for x in self[:10])
        return f"(#{len(self)}) [{shown}{', ...' if len(self) > 10 else ''}]"


class DataPath(type(Path())):
    """A Path with .ls(), the folder listing the chapter calls: (path/'images').ls().

    fastai adds ls() to every pathlib.Path by patching the class; a subclass gives it to the paths that
    untar_data returns (and everything built from them with /) without touching pathlib.
    """

    def ls(self):
        """The folder's entries, sorted, as an ItemList."""
        return ItemList(sorted(self.iterdir()))


class URLs:
    """The data sets of the chapter, by URL (fastai's names)."""
    PETS = 'https://s3.amazonaws.com/fast-ai-imageclas/oxford-iiit-pet.tgz'
    PETS_SAMPLE = 'embedded://oxford-pets-sample'


@dataclass(frozen=True)
class Archive:
    """What we know of a downloadable archive before fetching it, to check what arrives."""
    name: str        # the folder it unpacks to
    size: int        # bytes
    md5: str


KNOWN_ARCHIVES = {
    URLs.PETS: Archive('oxford-iiit-pet', 811_706_944, 'e4db5c768afd933bb91f5f594d7417a4'),
}


class DownloadError(RuntimeError):
    """A download or extraction that could not complete; the message says why and what to do."""


def data_folder():
    """Where data sets live: $PETS_DATA, else ~/.pets/data."""
    return Path(os.environ.get('PETS_DATA', Path.home() / '.pets' / 'data')).expanduser()


def untar_data(url, data=None, md5=None, size=None, force_download=False, retries=3):
    """Downloads and unpacks the archive at `url` (unless already there); returns the unpacked folder.

    Args:
        url: URLs.PETS, URLs.PETS_SAMPLE, or any URL of a .tgz / .tar.gz / .tar archive.
        data: the folder to put data sets in (default: data_folder()).
        md5, size: the expected checksum and byte count, for archives not in KNOWN_ARCHIVES.
        force_download: download and unpack again even if the folder exists.
        retries: how many times a dropped connection is resumed before giving up.
    """
    data = DataPath(data if data is not None else data_folder())
    if url == URLs.PETS_SAMPLE:
        return _copy_sample(data / SAMPLE_FOLDER.name, force_download)
    known = KNOWN_ARCHIVES.get(url)
    name = known.name if known else _archive_name(url)
    md5 = md5 or (known and known.md5)
    size = size or (known and known.size)
    destination = data / name
    if destination.exists() and not force_download:
        return destination
    data.mkdir(parents=True, exist_ok=True)
    archive = data / f"{name}.tgz"
    if force_download or not archive.exists():
        download(url, archive, md5=md5, size=size, retries=retries)
    extract(archive, destination)
    return destination


def _archive_name(url):
    name = url.rstrip('/').rsplit('/', 1)[-1]
    for suffix in ('.tar.gz', '.tgz', '.tar'):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    raise DownloadError(f"{url} does not name a .tgz, .tar.gz or .tar archive")


def _copy_sample(destination, force):
    """The embedded sample is copied out of the package, so that a learner can write next to it."""
    if destination.exists() and not force:
        return destination
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    shutil.copytree(SAMPLE_FOLDER, staging, dirs_exist_ok=True)
    staging.rename(destination)
    return destination


def download(url, path, md5=None, size=None, retries=3, chunk_bytes=1 << 20):
    """Downloads url to path, resuming `<path>.part` if a previous attempt left one; verifies size and md5.

    A dropped connection is resumed up to `retries` times (an HTTP Range request for the missing bytes);
    after that the partial file stays for the next call to resume. A file of the wrong size or checksum
    is deleted, with an error that says so.
    """
    path = Path(path)
    part = path.with_name(path.name + '.part')
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, size, chunk_bytes)
            break
        except urllib.error.HTTPError as error:
            raise DownloadError(f"downloading {url} failed: HTTP {error.code} {error.reason}. Check the URL, "
                                f"or download the file by hand to {path}") from error
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            if attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                kept = f"; the partial file {part} ({have:,} bytes) is kept: call again to resume" if have else ""
                raise DownloadError(f"downloading {url} failed after {retries + 1} attempts ({error}){kept}") \
                    from error
            time.sleep(0.1 * 2 ** attempt)
    _verify(part, url, md5, size)
    part.rename(path)
    return path


def _fetch_into(url, part, size, chunk_bytes):
    """Appends the bytes part lacks; raises ConnectionError if the server stops short."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:
        return  # complete already: only the check and rename remain
    request = urllib.request.Request(url, headers={'Range': f'bytes={have}-'} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416:  # "range not satisfiable": part already holds the whole file
            return
        raise
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server ignored the Range header: start over
        length = response.headers.get('Content-Length')
        total = size or (have + int(length) if length else None)
        with open(part, 'ab' if resumed else 'wb') as file, \
                tqdm(total=total, initial=have, unit='B', unit_scale=True, desc=part.name[:-5],
                     disable=None) as progress:
            while chunk := response.read(chunk_bytes):
                file.write(chunk)
                progress.update(len(chunk))
        if length is not None and part.stat().st_size < have + int(length):
            raise ConnectionError(f"the server closed the connection after {part.stat().st_size:,} bytes")


def _verify(part, url, md5, size):
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(f"{url} gave {actual_size:,} bytes, expected {size:,}; the file was deleted: "
                            f"call again to download it afresh")
    if md5 is not None:
        digest = hashlib.md5()
        with open(part, 'rb') as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != md5:
            part.unlink()
            raise DownloadError(f"{url} has md5 {digest.hexdigest()}, expected {md5}: the download is corrupt "
                                f"and was deleted; call again to download it afresh")


def _unsafe(archive, member, destination, why):
    return DownloadError(f"{archive} is unsafe and was not extracted: member {member!r} would be written "
                         f"outside {destination} ({why})")


def extract(archive, destination):
    """Unpacks a tar archive into destination, refusing members that would land outside it.

    Unpacks into a temporary folder beside destination and renames it at the end, so a failed extraction
    leaves nothing half-written. An archive whose members share one top folder (oxford-iiit-pet/...) has
    that folder become destination.
    """
    archive, destination = Path(archive), Path(destination)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():  # the 'data' filter would only strip a leading '/': refuse it
                if member.name.startswith(('/', '\\')) or '..' in Path(member.name).parts:
                    raise _unsafe(archive, member.name, destination, 'absolute or .. path')
            try:
                # The 'data' filter (PEP 706) also refuses links leaving the folder and device files:
                # the stdlib's vetted version of these checks.
                tar.extractall(staging, filter='data')
            except tarfile.FilterError as error:
                raise _unsafe(archive, error.tarinfo.name, destination, type(error).__name__) from error
        entries = list(staging.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        if destination.exists():
            shutil.rmtree(destination)
        root.rename(destination)
    except (tarfile.TarError, EOFError) as error:
        raise DownloadError(f"{archive} is not a readable tar archive ({error}); delete it and call again "
                            f"to download it afresh") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination
