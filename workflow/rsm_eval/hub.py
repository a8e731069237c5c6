"""Hugging Face Hub models as ordinary sources: one URL source per file, locked like any other.

Two spellings in config, neither needing a registry entry:

* open_clip: `arch: hf-hub:<org>/<repo>` (open_clip's own syntax). Its `open_clip_config.json`
  becomes the model-config source and, unless weights are given, `open_clip_pytorch_model.bin`
  the weights source (override with `weights:` for a repo that only ships safetensors).
* transformers: `backend: transformers`, `arch: clip | siglip` (the family) and
  `hub: <org>/<repo>`. The files `from_pretrained` reads (config, weights, tokenizer,
  preprocessor config; `files:` overrides the list) land in one directory.

Each file is fetched by the source layer from `https://huggingface.co/<repo>/resolve/<revision>/`
(`revision:` pins a commit; default `main`; `HF_ENDPOINT` names a mirror instead), so its
sha256 is recorded in the sources lock on the first verified download and checked on every
later one, as for every other unpublished checksum.
Nothing here downloads; this module only rewrites a config entry (no imports of the package).
"""

from __future__ import annotations

import os
from typing import Any

HF_HUB_PREFIX = "hf-hub:"
# huggingface_hub's own variable for a mirror (read when the config is loaded).
ENDPOINT_ENV = "HF_ENDPOINT"
HF_URL = "{endpoint}/{repo}/resolve/{revision}/{file}"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"

_COMMON = ["config.json", "model.safetensors", "preprocessor_config.json"]
_TOKENIZER = ["tokenizer_config.json", "special_tokens_map.json"]
# What `AutoModel` / `AutoTokenizer` / the preprocessor config need, by family.
TRANSFORMERS_FILES = {
    "clip": _COMMON + _TOKENIZER + ["vocab.json", "merges.txt"],
    "siglip": _COMMON + _TOKENIZER + ["spiece.model"],
}
FAMILIES = tuple(TRANSFORMERS_FILES)


class HubError(ValueError):
    """A hub spelling that cannot be expanded; config turns it into an RsmEvalError."""


def url(repo: str, revision: str | None, file: str) -> str:
    endpoint = os.environ.get(ENDPOINT_ENV, "https://huggingface.co").rstrip("/")
    return HF_URL.format(endpoint=endpoint, repo=repo, revision=revision or "main", file=file)


def _check_repo(where: str, repo: str) -> str:
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo):
        raise HubError(f"{where}: {repo!r} is not a Hugging Face repository id '<org>/<name>'")
    return repo


def expand(where: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a model entry that names a hub repo into explicit URL sources.

    Returns a new entry: `arch` may become a source mapping (the open_clip config file) and
    `weights` a source mapping or a list of them (files of one directory, listed in `files`).
    Entries without a hub spelling come back unchanged.
    """
    entry = dict(entry)
    backend = entry.get("backend", "open_clip")
    arch = entry.get("arch")
    revision = entry.get("revision")
    has_weights = bool({"weights", "pretrained", "random"} & set(entry))
    if backend == "open_clip" and isinstance(arch, str) and arch.startswith(HF_HUB_PREFIX):
        repo = _check_repo(f"{where}.arch", arch[len(HF_HUB_PREFIX) :])
        entry["hub"] = repo
        entry["arch"] = {"url": url(repo, revision, OPEN_CLIP_CONFIG)}
        if not has_weights:
            entry["weights"] = {"url": url(repo, revision, OPEN_CLIP_WEIGHTS)}
        return entry
    if backend == "open_clip" and "hub" in entry:
        raise HubError(f"{where}.hub: an open_clip model names its repo as arch: hf-hub:<repo>")
    if backend == "transformers":
        if arch not in FAMILIES:
            raise HubError(
                f"{where}.arch: a transformers model's arch is its family, one of "
                f"{', '.join(FAMILIES)} (got {arch!r})"
            )
        if "hub" in entry:
            repo = _check_repo(f"{where}.hub", entry["hub"])
            if has_weights:
                raise HubError(f"{where}: give either hub (a repo) or weights (a directory)")
            files = list(entry.get("files") or TRANSFORMERS_FILES[arch])
            entry["files"] = files
            entry["weights"] = [{"url": url(repo, revision, f)} for f in files]
        elif "weights" not in entry:
            raise HubError(
                f"{where}: a transformers model needs hub (a repo id) or weights (a local "
                "directory saved by save_pretrained)"
            )
    return entry
