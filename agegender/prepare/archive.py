"""Reading a source of faces, an archive (.tar.gz, .tar, .zip) or a folder, file by file.

Nothing is extracted to disk, and nothing beyond one file at a time is held in memory.
"""

from __future__ import annotations

import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from agegender.errors import UserError
from agegender.files import walk_files

MAX_FILE_BYTES = 20 * 2**20  # a face is a few kB; a bigger file is not read into memory
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name) is not None


def _skipped(name: str) -> bool:
    """Hidden files and macOS resource forks are not faces."""
    parts = PurePosixPath(name).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


@dataclass(frozen=True)
class Member:
    name: str  # base name, bytes that are not UTF-8 written as \xNN
    data: bytes  # b"" when not read
    problem: str  # why the file was not read, or ""


def read_source(source: Path) -> Iterator[Member]:
    """Yield every file of an archive or folder, never touching disk.

    Archives are read in memory, so a hostile member cannot write anywhere; members with
    absolute paths, '..', links or devices are refused all the same, since they mean the
    archive is not what it claims to be. A file that cannot be read (too big, encrypted)
    comes with the reason, so prepare lists it as unreadable.
    """
    if not source.exists():
        raise UserError(
            f"{source}: not found. Download UTKFace ('Aligned & Cropped Faces') and put the "
            f"archive at data/raw/UTKFace.tar.gz or its folder at data/raw/UTKFace/ "
            f"(then set data.raw in params.yaml)"
        )
    if source.is_dir():
        yield from _read_folder(source)
    elif not source.is_file():  # /dev/zero, a FIFO: reading would never end
        raise UserError(
            f"{source}: not a regular file or folder (a device, pipe or socket); set data.raw "
            f"to the archive or its folder"
        )
    elif zipfile.is_zipfile(source):
        yield from _read_zip(source)
    elif tarfile.is_tarfile(source):
        yield from _read_tar(source)
    else:
        raise UserError(f"{source}: not a .tar.gz, .tar or .zip archive, nor a folder")


def _member(name: str, problem: str, read: Callable[[], bytes]) -> Member:
    """Read a file unless `problem` says why not; names from any OS become printable text."""
    base = PurePosixPath(name).name.encode("utf-8", "surrogateescape")
    return Member(base.decode("utf-8", "backslashreplace"), b"" if problem else read(), problem)


def _too_big(size: int) -> str:
    if size <= MAX_FILE_BYTES:
        return ""
    return f"{size / 2**20:.1f} MB, over the {MAX_FILE_BYTES >> 20} MB limit for one image"


def _read_folder(folder: Path) -> Iterator[Member]:
    """Symlinks to files are followed (a DVC or symlink-farm checkout is all links);
    linked folders are not descended into, so a link cannot loop."""
    for path in walk_files(folder):
        if _skipped(path.relative_to(folder).as_posix()) or not path.is_file():
            continue
        try:
            member = _member(path.name, _too_big(path.stat().st_size), path.read_bytes)
        except OSError as error:
            raise UserError(
                f"{path}: cannot be read ({error.strerror}); fix or remove it"
            ) from None
        yield member


def _read_tar(archive: Path) -> Iterator[Member]:
    try:
        with tarfile.open(archive, "r:*") as tar:
            count = 0
            while (member := tar.next()) is not None:
                count += 1
                tar.members = []  # tarfile keeps every header read (~0.5 kB a file); drop them
                if member.isdir():
                    continue
                if not member.isfile() or _unsafe(member.name):
                    kind = "link" if member.issym() or member.islnk() else "special file"
                    kind = kind if not member.isfile() else "path outside the archive"
                    raise UserError(
                        f"{archive}: refusing member {member.name!r} ({kind}); "
                        f"re-pack the archive with plain files only"
                    )
                if _skipped(member.name):
                    continue
                handle = tar.extractfile(member)
                assert handle is not None
                yield _member(member.name, _too_big(member.size), handle.read)
            _check_tar_end(archive, tar, count)
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as error:
        raise UserError(f"{archive}: broken archive ({error}); download it again") from None


def _check_tar_end(archive: Path, tar: tarfile.TarFile, count: int) -> None:
    """Read on to the end of the file: tarfile takes a damaged header for the end of the
    archive, so only the rest (all zeros in a whole archive) and the gzip/bzip2/xz checksum at
    the very end tell a damaged archive from a complete one."""
    assert tar.fileobj is not None
    tar.fileobj.seek(tar.offset)
    while chunk := tar.fileobj.read(2**20):
        if chunk.count(0) != len(chunk):
            raise UserError(
                f"{archive}: damaged archive: unreadable after its first "
                f"{count} members; download it again"
            )


def _zip_problem(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & 0x1:
        return "encrypted zip member (needs a password); re-pack the archive without one"
    if info.compress_type not in ZIP_METHODS:
        return f"zip compression method {info.compress_type} not supported; re-pack with deflate"
    return _too_big(info.file_size)


def _read_zip(archive: Path) -> Iterator[Member]:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                mode = info.external_attr >> 16
                if _unsafe(info.filename) or stat.S_ISLNK(mode):
                    raise UserError(
                        f"{archive}: refusing member {info.filename!r} (link or path outside the "
                        f"archive); re-pack the archive with plain files only"
                    )
                if _skipped(info.filename):
                    continue
                yield _member(info.filename, _zip_problem(info), partial(zf.read, info))
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError) as error:
        raise UserError(f"{archive}: broken archive ({error}); download it again") from None
    except UnicodeDecodeError as error:  # a member name flagged UTF-8 that is not
        raise UserError(f"{archive}: a member name is not UTF-8 ({error}); re-pack it") from None
