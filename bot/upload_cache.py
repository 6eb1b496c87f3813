"""What `upload` knows about a project's frames from its last run: (path, size, mtime) -> MD5.

A re-run decides from this file and one S3 listing which frames changed, without reading the
frames that did not (like `aws s3 sync`, which compares size and modification time, but
checked against the object's ETag, so an object replaced in S3 since is uploaded again). A file
whose size or mtime changed is read and hashed as before. The file is gtbot's own, yet read
as untrusted: anything malformed in it counts as not known.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

VERSION = 1
FILE_NAME = ".gtbot-upload-cache.json"
# Far above any project (Ground Truth takes 100,000 objects per job), so a runaway file is
# ignored rather than loaded.
MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileState:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns)


@dataclass
class UploadCache:
    path: Path
    entries: dict[str, tuple[int, int, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> UploadCache:
        cache = cls(path)
        try:
            if path.stat().st_size > MAX_BYTES:
                return cache
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return cache
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return cache
        files = data.get("files")
        if not isinstance(files, dict):
            return cache
        for name, entry in files.items():
            if (
                isinstance(entry, list)
                and len(entry) == 3
                and isinstance(entry[0], int)
                and isinstance(entry[1], int)
                and isinstance(entry[2], str)
                and len(entry[2]) == 32
            ):
                cache.entries[name] = (entry[0], entry[1], entry[2])
        return cache

    def md5(self, name: str, state: FileState) -> str | None:
        """The MD5 recorded for this file, if it is still the size and age it was then."""
        entry = self.entries.get(name)
        if entry is None or (entry[0], entry[1]) != (state.size, state.mtime_ns):
            return None
        return entry[2]

    def save(self, known: dict[str, tuple[FileState, str]]) -> None:
        """Keep exactly the files of this run (a deleted frame drops out), atomically; a cache
        that cannot be written only costs the next run some reading."""
        entries = {
            name: (state.size, state.mtime_ns, md5)
            for name, (state, md5) in known.items()
            if len(md5) == 32  # not a multipart ETag (`<hex>-<parts>`)
        }
        if entries == self.entries and self.path.is_file():
            return  # a re-run that changed nothing writes nothing
        self.entries = entries
        body = orjson.dumps({"version": VERSION, "files": self.entries})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=FILE_NAME, dir=self.path.parent)
            with os.fdopen(fd, "wb") as out:
                out.write(body)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
