"""Fetch and verify the workflow's inputs: datasets and model checkpoints.

A source comes from the config either as ``{url, mirrors?, sha256?, size?, md5?, member?,
recipe?}`` (downloaded over HTTP, the url first and then each mirror) or as ``{path, ...,
instructions?}`` (a manual download the user puts in place by hand). ``member`` names a file
or directory inside a zip/tar/RAR archive; when a mirror lays the archive out differently,
the annotation file and the image folder are found by what they contain.

Modules: ``spec`` (config entry -> Source, errors), ``http`` (resumable downloads),
``lock`` (the lock file of checksums recorded on first use), ``archives`` (safe
extraction), ``layout`` (finding a dataset inside an archive), ``recipes`` (UCM-Captions from
UC Merced) and ``materialize`` (one source onto its destination; the missing ones listed).
"""

from __future__ import annotations

from . import http, recipes
from .archives import _Extractor, safe_extract
from .http import StderrProgress, download
from .layout import Layout
from .lock import LockFile
from .materialize import check_available, materialize
from .spec import (
    ChecksumMismatchError,
    DownloadError,
    LayoutError,
    MirrorsFailedError,
    MissingSource,
    MissingSourcesError,
    Source,
    SourceUnreachableError,
    UnsafeArchiveError,
    VerificationError,
)

__all__ = [
    "ChecksumMismatchError",
    "DownloadError",
    "Layout",
    "LayoutError",
    "LockFile",
    "MirrorsFailedError",
    "MissingSource",
    "MissingSourcesError",
    "Source",
    "SourceUnreachableError",
    "StderrProgress",
    "UnsafeArchiveError",
    "VerificationError",
    "_Extractor",
    "check_available",
    "download",
    "http",
    "materialize",
    "recipes",
    "safe_extract",
]
