"""The index of a BIDS dataset: its NIfTI files of subjects and their entities, from pybids.

Indexing is the slow step of a BIDS run (pybids parses every file name into a SQLite
database). So that it happens once:

- one :class:`BIDSIndex` serves every map of a call (``--label GM WM CSF``);
- with a database folder (``--bids-database-dir``, as fMRIPrep's), pybids' database and the
  list of files it gave are saved there, and later calls read the list back without
  pybids. It is rebuilt, with a log line, when the dataset's folders have changed since (a
  file added, removed or renamed changes its folder's modification time), so a reused index
  never misses a new subject. Each dataset gets its own subfolder, so one database folder
  can serve several datasets.

Only what a group map can use is indexed: ``.nii``/``.nii.gz`` files (no sidecar metadata),
outside ``code/``, ``sourcedata/``, ``stimuli/``, ``models/``, ``derivatives/``, logs, figures
and hidden folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._optional import require
from ..io import locked
from .metadata import read_dataset_description

__all__ = [
    "BIDSIndex",
    "IndexedFile",
]

LOGGER = logging.getLogger(__name__)

#: Folders never indexed (at any depth), and files that are not NIfTI.
_SKIPPED_FOLDERS = (
    "code",
    "sourcedata",
    "stimuli",
    "models",
    "derivatives",
    "logs",
    "log",
    "figures",
    "work",
)
_NOT_NIFTI = re.compile(r"/[^/.]*\.(?!nii$|nii\.gz$)[^/]*$")
_SKIPPED = re.compile(r"/(" + "|".join(_SKIPPED_FOLDERS) + r"|\.[^/]*)$")

#: Version of what this module stores beside pybids' database (bump to rebuild them all).
_INDEX_VERSION = 1


@dataclass(frozen=True)
class IndexedFile:
    """One NIfTI file of a subject: its absolute path and its entities (pybids names;
    values as text, ``run`` without padding)."""

    path: str
    entities: dict[str, str]


class BIDSIndex:
    """The NIfTI files of a dataset's subjects, indexed once (see the module doc).

    Parameters
    ----------
    bids_dir : path-like
        Root of a BIDS or BIDS-derivatives dataset.
    database_dir : path-like, optional
        Where to keep the index for later calls (created).

    Attributes
    ----------
    root : pathlib.Path
        The dataset's absolute root.
    description : dict
        Its ``dataset_description.json``, read strictly.
    files : list of IndexedFile
        Every NIfTI file with a subject entity, sorted by path.

    Raises
    ------
    FileNotFoundError
        If ``bids_dir`` is not a BIDS dataset.
    ValueError
        If its ``dataset_description.json`` is malformed (naming it).
    ImportError
        Without pybids (the ``bids`` extra).
    """

    def __init__(
        self,
        bids_dir: str | os.PathLike[str],
        *,
        database_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(bids_dir).absolute()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: the BIDS dataset does not exist")
        self.description = read_dataset_description(self.root)
        self.is_derivative = self.description.get("DatasetType") == "derivative"
        self.files = self._index(database_dir)

    # -- what it holds -----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The dataset's ``Name``, or its folder's name."""
        return str(self.description.get("Name") or self.root.name)

    @property
    def generated_by(self) -> list[dict[str, Any]]:
        """The dataset's ``GeneratedBy`` (the pipelines that made it)."""
        return list(self.description.get("GeneratedBy", []))

    def entity_names(self) -> set[str]:
        """Every entity name some file has."""
        return {name for f in self.files for name in f.entities}

    # -- indexing ----------------------------------------------------------------------
    def _index(self, database_dir: str | os.PathLike[str] | None) -> list[IndexedFile]:
        require("bids", "selecting inputs from BIDS")
        if database_dir is None:
            return self._query(self._layout(None, reset=True))
        folder = Path(database_dir).absolute() / _database_name(self.root, self.is_derivative)
        folder.mkdir(parents=True, exist_ok=True)
        stamp_file = folder / "nipype_heatmap_index.json"
        with locked(folder, what=f"the BIDS index of {self.root} in {folder}"):
            stamp = {"version": _INDEX_VERSION, "root": str(self.root), **_fingerprint(self.root)}
            try:
                saved = json.loads(stamp_file.read_text())
                fresh = saved["stamp"] == stamp
            except (OSError, ValueError, KeyError, TypeError):
                saved, fresh = None, False
            if fresh:
                LOGGER.info("Reusing the BIDS index of %s in %s", self.root, folder)
                return [IndexedFile(path, entities) for path, entities in saved["files"]]
            if stamp_file.exists():
                LOGGER.info(
                    "%s changed since its index in %s was made: indexing it again",
                    self.root,
                    folder,
                )
            files = self._query(self._layout(folder, reset=True))
            content = {"stamp": stamp, "files": [[f.path, f.entities] for f in files]}
            stamp_file.write_text(json.dumps(content))
        return files

    def _layout(self, database: Path | None, *, reset: bool):
        from bids import BIDSLayout
        from bids.layout import BIDSLayoutIndexer

        if reset:
            LOGGER.info("Indexing %s with pybids", self.root)
        return BIDSLayout(
            self.root,
            validate=False,
            is_derivative=self.is_derivative,
            config=["bids", "derivatives"],
            database_path=None if database is None else str(database),
            reset_database=reset,
            indexer=BIDSLayoutIndexer(
                validate=False, index_metadata=False, ignore=[_SKIPPED, _NOT_NIFTI]
            ),
        )

    def _query(self, layout) -> list[IndexedFile]:
        from bids.layout import Query

        found = layout.get(return_type="object", subject=Query.ANY)
        files = []
        for item in found:
            entities = {
                str(k): str(int(v)) if k == "run" else str(v)
                for k, v in item.get_entities(metadata=False).items()
            }
            if entities.get("extension") in (".nii", ".nii.gz"):
                files.append(IndexedFile(str(Path(item.path).absolute()), entities))
        return sorted(files, key=lambda f: f.path)


def _database_name(root: Path, derivative: bool) -> str:
    """A subfolder name of its own for each dataset (its folder name and a hash of its path)."""
    digest = hashlib.sha256(f"{root}|{derivative}".encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9]', '', root.name) or 'dataset'}-{digest}"


def _fingerprint(root: Path) -> dict[str, str]:
    """What changes when a NIfTI file is added, removed or renamed anywhere that is indexed:
    every indexed folder's path and modification time."""
    digest = hashlib.sha256()
    count = 0
    for folder, subfolders, _ in os.walk(root):
        subfolders[:] = sorted(
            d for d in subfolders if not d.startswith(".") and d not in _SKIPPED_FOLDERS
        )
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            continue
        digest.update(f"{os.path.relpath(folder, root)}\0{mtime}\n".encode())
        count += 1
    return {"folders": str(count), "listing": digest.hexdigest()}
