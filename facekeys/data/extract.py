"""Taking a data set's files out of a source folder or zip archive into the staging folder.

The data set's layout (its CSVs, or the zips they ship in, and its image folders) is looked up
under any folder prefix of the source. Copying refuses symbolic links that leave the source;
extraction refuses unsafe member names and links, and caps the bytes it writes (zip bombs).
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from facekeys.data.dataset_layout import DatasetLayout
from facekeys.errors import FacekeysError
from facekeys.data.source_plan import FetchSettings


def _locate(entries: set[str], layout: DatasetLayout) -> str | None:
    """Finds the folder prefix ('' or 'a/b/') under which the whole layout is present."""
    prefixes = {""}
    for entry in entries:
        parts = PurePosixPath(entry).parts
        prefixes.update("".join(p + "/" for p in parts[:k]) for k in range(1, len(parts)))
    zips = dict(layout.csv_zips)
    for prefix in sorted(prefixes, key=lambda p: (p.count("/"), p)):
        csvs_ok = all(
            prefix + csv in entries or (csv in zips and prefix + zips[csv] in entries)
            for csv in layout.csvs
        )
        dirs_ok = all(prefix + d + "/" in entries for d in layout.image_dirs)
        if csvs_ok and dirs_ok:
            return prefix
    return None


def _expected(layout: DatasetLayout) -> str:
    """The layout in words, for a message saying it was not found."""
    zips = dict(layout.csv_zips)
    parts = [f"{c} (or {zips[c]})" if c in zips else c for c in layout.csvs]
    parts += [d + "/" for d in layout.image_dirs]
    return ", ".join(parts)


def copy_from_folder(
    source: Path, layout: DatasetLayout, staging: Path, settings: FetchSettings
) -> None:
    """Copies the layout's files from a local folder (or a subfolder of it) into ``staging``."""
    entries: set[str] = set()
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        if len(rel.parts) > 3:
            dirs.clear()
            continue
        prefix = "" if rel == Path(".") else rel.as_posix() + "/"
        entries.update(prefix + d + "/" for d in dirs)
        entries.update(prefix + f for f in files)
    prefix = _locate(entries, layout)
    if prefix is None:
        raise FacekeysError(f"{source}: does not hold the expected layout: {_expected(layout)}")
    base = source / prefix
    zips = dict(layout.csv_zips)
    for csv in layout.csvs:
        if (base / csv).is_file():
            _refuse_links_out(base / csv, source)
            shutil.copyfile(base / csv, staging / csv)
        else:
            _refuse_links_out(base / zips[csv], source)
            _csv_from_inner_zip(base / zips[csv], csv, staging, settings)
    for d in layout.image_dirs:
        _refuse_links_out(base / d, source)
        for root, dirs, files in os.walk(base / d):
            for name in dirs:
                if (Path(root) / name).is_symlink():
                    raise FacekeysError(f"{Path(root) / name}: a symbolic link to a folder")
            for name in files:
                _refuse_links_out(Path(root) / name, source)
        # Links that stay inside the source are copied as the files they point to, so data/raw
        # (and the DVC cache) never holds a link.
        shutil.copytree(base / d, staging / d, symlinks=False)


def _refuse_links_out(path: Path, source: Path) -> None:
    """Refuses a symbolic link that leaves the source folder, as archive members are refused:
    nothing outside the source may be copied into data/raw."""
    if not path.is_symlink():
        return
    target, root = path.resolve(), source.resolve()
    if target != root and root not in target.parents:
        raise FacekeysError(f"{path}: symbolic link leaves the source folder (to {target})")


def extract_from_zip(
    archive: Path, layout: DatasetLayout, staging: Path, settings: FetchSettings, label: str
) -> None:
    """Extracts the layout's files from a zip archive into ``staging``; ``label`` names the
    archive in messages."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FacekeysError(f"{label}: not a readable zip archive ({exc})") from None
    with zf:
        members = {info.filename: info for info in zf.infolist()}
        entries = set(members)
        for name in members:  # folders are often implicit in zips
            parts = PurePosixPath(name).parts
            entries.update("".join(p + "/" for p in parts[: k + 1]) for k in range(len(parts) - 1))
        prefix = _locate(entries, layout)
        if prefix is None:
            raise FacekeysError(
                f"{label}: archive does not hold the expected layout: {_expected(layout)}"
            )
        wanted = [prefix + c for c in layout.csvs]
        wanted += [prefix + z for _, z in layout.csv_zips]
        budget = _Budget(settings.max_extract_bytes, label)
        for name, info in members.items():
            rel = name[len(prefix) :]
            top = rel.split("/", 1)[0]
            in_dirs = name.startswith(prefix) and top in layout.image_dirs and "/" in rel
            if not (name in wanted or in_dirs) or info.is_dir():
                continue
            _check_member(info, label)
            _extract_member(zf, info, staging / rel, budget)
    zips = dict(layout.csv_zips)
    for csv in layout.csvs:
        if not (staging / csv).is_file():
            _csv_from_inner_zip(staging / zips[csv], csv, staging, settings)
        if csv in zips and (staging / zips[csv]).exists():
            (staging / zips[csv]).unlink()


def _csv_from_inner_zip(inner: Path, csv: str, staging: Path, settings: FetchSettings) -> None:
    """Extracts the one ``csv`` a zipped CSV (Kaggle's ``training.zip``) holds."""
    try:
        zf = zipfile.ZipFile(inner)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FacekeysError(f"{inner}: not a readable zip archive ({exc})") from None
    with zf:
        matches = [i for i in zf.infolist() if PurePosixPath(i.filename).name == csv]
        if len(matches) != 1:
            raise FacekeysError(f"{inner}: expected exactly one {csv} inside, found {len(matches)}")
        _check_member(matches[0], str(inner))
        _extract_member(
            zf, matches[0], staging / csv, _Budget(settings.max_extract_bytes, str(inner))
        )


class _Budget:
    """The bytes extraction may still write before it exceeds ``max_extract_bytes``."""

    def __init__(self, limit: int, label: str) -> None:
        self.left = limit
        self.limit = limit
        self.label = label

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise FacekeysError(
                f"{self.label}: extracting exceeds max_extract_bytes {self.limit} (zip bomb?)"
            )


def _check_member(info: zipfile.ZipInfo, label: str) -> None:
    """Refuses a member whose name leaves the target folder, or that is a symbolic link."""
    name = info.filename
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or "\\" in name or ":" in parts[0]:
        raise FacekeysError(f"{label}: unsafe path in archive: {name!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise FacekeysError(f"{label}: archive member {name!r} is a symbolic link")


def _extract_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: _Budget
) -> None:
    """Writes one member to ``dest``, charging every byte to ``budget``."""
    # Stream and count real bytes: a zip's declared sizes can lie.
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zf.open(info) as src, open(dest, "wb") as dst:
            while chunk := src.read(1 << 20):
                budget.spend(len(chunk))
                dst.write(chunk)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        NotImplementedError,
    ) as exc:
        raise FacekeysError(f"{budget.label}: cannot extract {info.filename!r}: {exc}") from None
