"""Safe extraction of a dataset shipped as one .zip or .tar(.gz/.bz2/.xz) file.

Extraction always goes to a fresh temporary folder, never beside the input, and refuses any entry that would
land outside it (absolute paths, '..', links), so an archive cannot overwrite or reveal anything else.
"""

from __future__ import annotations

import lzma
import os
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..data.images import is_image_name
from ..disk_space import disk_full_reported, require_free_space
from ..errors import InsufficientDiskSpaceError, InvalidDatasetError

ARCHIVE_SUFFIXES = (
    ".zip",
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz2",
    ".tar.xz",
    ".txz",
    ".gz",
    ".bz2",
    ".xz",
)
# Entries every archiving tool adds and no user means as data.
JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_member_path(name: str, archive: Path, subject: str, backslash_is_separator: bool) -> PurePosixPath | None:
    # Zip tools on Windows write '\\' between folders; in a tar it is an ordinary character of a name.
    member = PurePosixPath(name.replace("\\", "/") if backslash_is_separator else name)
    if member.is_absolute() or ".." in member.parts or (member.parts and member.parts[0].endswith(":")):
        raise InvalidDatasetError(
            f"the archive '{archive.name}' holds the entry '{name}', which would be written outside the "
            "extraction folder.",
            "Repack the archive with relative paths only.",
            subject=subject,
        )
    parts = [part for part in member.parts if part not in ("", ".")]
    if not parts or any(part in JUNK_NAMES for part in parts):
        return None
    return PurePosixPath(*parts)


SPACE_FIX = "Use a compute with a larger disk, or give the images as a folder instead of an archive."


def extract_archive(archive: Path, destination: Path, subject: str) -> Path:
    """Extract archive into destination (created), refusing unsafe entries. Returns destination."""
    destination.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with disk_full_reported(destination, f"the contents of the archive '{archive.name}'", fix=SPACE_FIX):
                _extract_zip(archive, destination, subject)
        elif tarfile.is_tarfile(archive):
            with disk_full_reported(destination, f"the contents of the archive '{archive.name}'", fix=SPACE_FIX):
                _extract_tar(archive, destination, subject)
        else:
            raise InvalidDatasetError(
                f"'{archive.name}' is not a readable zip or tar archive.",
                "Check that the upload finished and that the file is a .zip, .tar, .tar.gz, .tgz, .tar.bz2 or .tar.xz.",
                subject=subject,
            )
    except (InvalidDatasetError, InsufficientDiskSpaceError):
        shutil.rmtree(destination, ignore_errors=True)
        raise
    except (
        OSError,
        zipfile.BadZipFile,
        tarfile.TarError,
        EOFError,
        NotImplementedError,
        zlib.error,  # a corrupt .tar.gz
        lzma.LZMAError,  # a corrupt .tar.xz
    ) as exc:
        shutil.rmtree(destination, ignore_errors=True)
        raise InvalidDatasetError(
            f"the archive '{archive.name}' could not be extracted ({exc}).",
            "Repack it as a single-disk .zip or a .tar(.gz) and make sure the compute has enough disk space.",
            subject=subject,
        ) from exc
    return destination


def _check_space(archive: Path, destination: Path, total: int, subject: str) -> None:
    """Refuse before writing anything when the archive unpacks to more than the disk holds (a zip bomb too),
    keeping a tenth of the free space for what the job writes next."""
    require_free_space(destination, int(total / 0.9), f"the archive '{archive.name}' unpacked", SPACE_FIX, subject)


def _extract_zip(archive: Path, destination: Path, subject: str) -> None:
    with zipfile.ZipFile(archive) as bundle:
        _check_space(archive, destination, sum(info.file_size for info in bundle.infolist()), subject)
        for info in bundle.infolist():
            target = _safe_member_path(info.filename, archive, subject, backslash_is_separator=True)
            if target is None:
                continue
            if info.flag_bits & 0x1:
                raise InvalidDatasetError(
                    f"the archive '{archive.name}' is encrypted (password-protected), so '{info.filename}' "
                    "cannot be read.",
                    "Repack the images without a password.",
                    subject=subject,
                )
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:  # a symbolic link stored in the zip
                raise InvalidDatasetError(
                    f"the archive '{archive.name}' holds the link '{info.filename}'; links are refused.",
                    "Repack the archive with the files themselves instead of links.",
                    subject=subject,
                )
            path = destination.joinpath(*target.parts)
            if info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(info) as source, open(path, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def _extract_tar(archive: Path, destination: Path, subject: str) -> None:
    with tarfile.open(archive) as bundle:
        members = bundle.getmembers()
        _check_tar_ends_cleanly(bundle, archive, len(members), subject)
        _check_space(archive, destination, sum(m.size for m in members if m.isfile()), subject)
        for member in members:
            target = _safe_member_path(member.name, archive, subject, backslash_is_separator=False)
            if target is None:
                continue
            if member.issym() or member.islnk() or member.isdev() or member.isfifo():
                raise InvalidDatasetError(
                    f"the archive '{archive.name}' holds the link or special file '{member.name}'; "
                    "only regular files and folders are accepted.",
                    "Repack the archive with the files themselves instead of links.",
                    subject=subject,
                )
            path = destination.joinpath(*target.parts)
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            source = bundle.extractfile(member)
            if source is None:
                continue
            with source, open(path, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def _check_tar_ends_cleanly(bundle: tarfile.TarFile, archive: Path, listed: int, subject: str) -> None:
    """tarfile takes a damaged header for the end of the archive and silently lists only the entries before it.
    Reading the rest of the stream makes gzip, bzip2 and xz check their checksums (a corrupt stream raises), and
    anything but zero padding after the last entry means the listing stopped early."""
    stream = bundle.fileobj
    stream.seek(bundle.offset)
    while chunk := stream.read(1 << 20):
        if chunk.strip(b"\0"):
            raise InvalidDatasetError(
                f"the archive '{archive.name}' is damaged: its listing stops after {listed} entries, but data follows.",
                "Upload the archive again (the copy may be incomplete or corrupt), or repack it.",
                subject=subject,
            )


def dataset_root(extracted: Path) -> Path:
    """The folder that holds the dataset inside an extracted archive.

    Wrapper folders are descended ('data.zip' holding 'data/cat', 'data/dog' gives 'data'), also when hidden
    files or loose non-image files (an AppleDouble '._data', a README) lie beside them; a single folder of
    images is not: 'dog/*.png' stays a one-class ImageFolder, which the caller then rejects clearly.
    """
    current = extracted
    while not (current / "_meta.yaml").is_file():
        entries = [e for e in current.iterdir() if e.name not in JUNK_NAMES and not e.name.startswith(".")]
        folders = [e for e in entries if e.is_dir() and not e.is_symlink()]
        images = [e for e in entries if not e.is_dir() and is_image_name(e.name)]
        if len(folders) != 1 or images:
            return current
        only = folders[0]
        if (only / "_meta.yaml").exists() or any(child.is_dir() for child in only.iterdir()):
            current = only
        else:
            return current
    return current


def safe_walk(root: Path):
    """os.walk over root that follows no link leading outside it; yields (folder, file names) sorted."""
    root_real = os.path.realpath(root)
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if (real != root_real and not real.startswith(root_real + os.sep)) or real in seen:
            dirs[:] = []  # a link out of the input, or a loop back into it
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d not in JUNK_NAMES and not d.startswith("."))
        yield Path(folder), sorted(f for f in files if f not in JUNK_NAMES and not f.startswith("."))


def inside(root: Path, path: Path) -> bool:
    """Whether path, links resolved, stays inside root."""
    root_real = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)
