"""Regenerate envs/*.yaml from requirements.txt, the one place where versions are pinned.

    python workflow/scripts/sync_envs.py          # rewrite the env files
    python workflow/scripts/sync_envs.py --check  # exit 1 if they are out of date

Each env installs Python from conda-forge and the exact pip pins of the packages its steps
import, so `--use-conda` runs the same versions as the virtualenv that the tests use.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "3.11"
# Which pinned packages each kind of step imports.
ENVS = {
    "data": {
        "doc": "Light steps (fetch, demo, manifests, evaluate, linear probes, report): no torch.",
        "packages": [
            "numpy",
            "pandas",
            "pyarrow",
            "pillow",
            "pyyaml",
            "jsonschema",
            "libarchive-c",
            "opencv-python-headless",
            "scikit-learn",
            "matplotlib",
        ],
    },
    "torch": {
        "doc": "Embedding steps: torch (CUDA wheels), torchvision, open_clip and transformers.",
        "packages": [
            "numpy",
            "pandas",
            "pyarrow",
            "pillow",
            "pyyaml",
            "jsonschema",
            "torch",
            "torchvision",
            "open_clip_torch",
            "scipy",
            "opencv-python-headless",
            "transformers",
            "tokenizers",
            "sentencepiece",
            "protobuf",
        ],
    },
}


def pins(path: Path = ROOT / "requirements.txt") -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.strip().lower()] = version.strip()
    return out


def render(name: str) -> str:
    spec, versions = ENVS[name], pins()
    lines = [
        f"# {spec['doc']}",
        "# Generated from requirements.txt by workflow/scripts/sync_envs.py; do not edit.",
        f"name: rsm-eval-{name}",
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        f"  - python={PYTHON}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {p}=={versions[p]}" for p in spec["packages"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name in ENVS:
        path = ROOT / "envs" / f"{name}.yaml"
        text = render(name)
        if "--check" in argv:
            current = path.read_text() if path.exists() else ""
            if current != text:
                stale.append(str(path))
                diff = difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"{path.name} (on disk)",
                    f"{path.name} (from requirements.txt)",
                )
                sys.stderr.writelines(diff)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run workflow/scripts/sync_envs.py):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
