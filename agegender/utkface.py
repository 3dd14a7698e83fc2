"""UTKFace file names, sources and quirks.

Names are `{age}_{gender}_{race}_{datetime}.jpg.chip.jpg` (gender 0 male, 1 female;
race 0-4 White, Black, Asian, Indian, Others). The real archive has a few names that
break the pattern; age and gender are always the first two fields, so they are
recovered where that is unambiguous, and the deviation is recorded.
"""

from __future__ import annotations

import io
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

import numpy as np
from PIL import Image

from agegender.errors import UserError

RACES = ["White", "Black", "Asian", "Indian", "Others"]
UNKNOWN_RACE = -1
MAX_AGE = 120
AGE_BUCKETS = ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
MAX_FILE_BYTES = 20 * 2**20  # a face is a few kB; a bigger file is not read into memory
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)

_CANONICAL = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d{17})\.jpg\.chip\.jpg$")
_LEADING = re.compile(r"^(\d+)_(\d+)_(.*)$")


@dataclass(frozen=True)
class Labels:
    age: int | None
    gender: int | None
    race: int  # UNKNOWN_RACE when the name has no race field
    problem: str  # "" for a canonical name, else what is odd about it
    usable: bool  # age and gender recovered and in range


def parse_name(name: str) -> Labels:
    """Labels from a UTKFace file name (the base name, no folder)."""
    match = _CANONICAL.match(name)
    if match:
        age, gender, race = (int(g) for g in match.groups()[:3])
        return _checked(age, gender, race, "")
    match = _LEADING.match(name)
    if not match:
        return Labels(None, None, UNKNOWN_RACE, "name does not start with {age}_{gender}_", False)
    age, gender, rest = int(match.group(1)), int(match.group(2)), match.group(3)
    fields = rest.split("_")
    problems = []
    race = UNKNOWN_RACE
    if len(fields) >= 2 and fields[0].isdigit() and len(fields[0]) == 1:
        race, stamp = int(fields[0]), fields[1]
    else:
        problems.append("no race field")
        stamp = fields[0]
    digits = re.match(r"\d*", stamp).group(0)  # type: ignore[union-attr]
    suffix = stamp[len(digits) :]
    if len(digits) != 17:
        problems.append(f"{len(digits)}-digit timestamp")
    if suffix != ".jpg.chip.jpg":
        if suffix.strip() == ".jpg.chip.jpg":
            problems.append("space before .jpg")
        elif suffix == "jpg.chip.jpg":
            problems.append("missing dot before jpg")
        else:
            problems.append(f"unexpected ending {suffix!r}")
    return _checked(age, gender, race, "; ".join(problems))


def _checked(age: int, gender: int, race: int, problem: str) -> Labels:
    out_of_range = []
    if gender not in (0, 1):
        out_of_range.append(f"gender {gender} not 0/1")
    if not 0 <= age <= MAX_AGE:
        out_of_range.append(f"age {age} outside 0-{MAX_AGE}")
    if race != UNKNOWN_RACE and not 0 <= race < len(RACES):
        out_of_range.append(f"race {race} not 0-{len(RACES) - 1}")
        race = UNKNOWN_RACE
    if out_of_range:
        problem = "; ".join(filter(None, [problem, *out_of_range]))
        return Labels(age, gender, race, problem, False)
    return Labels(age, gender, race, problem, True)


def age_bucket(age: np.ndarray | int) -> np.ndarray:
    """Index into AGE_BUCKETS: decades, with 70 and over in one bucket."""
    return np.minimum(np.asarray(age) // 10, len(AGE_BUCKETS) - 1)


# --- reading a source: archive or folder -----------------------------------------------


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
    rglob does not descend into linked folders, so a link cannot loop."""
    for path in sorted(folder.rglob("*")):
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
            for member in tar:
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
            _check_tar_end(archive, tar)
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as error:
        raise UserError(f"{archive}: broken archive ({error}); download it again") from None


def _check_tar_end(archive: Path, tar: tarfile.TarFile) -> None:
    """Read on to the end of the file: tarfile takes a damaged header for the end of the
    archive, so only the rest (all zeros in a whole archive) and the gzip/bzip2/xz checksum at
    the very end tell a damaged archive from a complete one."""
    assert tar.fileobj is not None
    tar.fileobj.seek(tar.offset)
    while chunk := tar.fileobj.read(2**20):
        if chunk.count(0) != len(chunk):
            raise UserError(
                f"{archive}: damaged archive: unreadable after its first "
                f"{len(tar.getmembers())} members; download it again"
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


# --- pixels ---------------------------------------------------------------------------------


def to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8 bits, scaled by its own range; any
    other image as it is.

    PIL's convert("RGB") clips such modes at 255, which turns most 16-bit faces white.
    A flat image (no range) becomes mid-grey.
    """
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    pixels = np.asarray(image, dtype=np.float64)
    finite = pixels[np.isfinite(pixels)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    if high > low:
        scaled = (np.nan_to_num(pixels, nan=low, posinf=high, neginf=low) - low) / (high - low)
    else:
        scaled = np.full(pixels.shape, 0.5)
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8), "L")


def to_rgb_square(image: Image.Image, size: int) -> np.ndarray:
    """Any PIL image (grayscale, 16-bit, CMYK, alpha, palette, any shape) -> uint8 (S, S, 3).

    A non-square image is centre-cropped to a square first, so faces keep their shape.
    """
    image = to_8_bits(image)
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
    width, height = image.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def decode(data: bytes, size: int) -> np.ndarray | None:
    """Decode image bytes to uint8 (size, size, 3); None for empty, truncated or non-images."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))  # JPEG: let libjpeg decode at a smaller scale
            image.load()
            return to_rgb_square(image, size)
    except Exception:  # a corrupt file can make any decoder step fail; it is just unreadable
        return None
