"""Retrieval protocols: which texts are embedded and which pairs count as positives.

remoteclip  The published protocol (RemoteCLIP's retrieval.py, copied by RSM-CLIP's
            RET3_RetrieveTest.py): every caption is a query, its own image its one positive.
skyscript   SkyScript's: captions de-duplicated and prefixed "a satellite image. ", a caption
            is correct for every image carrying that exact string, per-direction mean recall.
            Its numbers are not comparable with the published tables.

A variant adds "-autocast" for mixed precision (never used for published-protocol numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RsmEvalError


@dataclass(frozen=True)
class Protocol:
    name: str
    text_prefix: str
    dedup_captions: bool


PROTOCOLS = {
    "remoteclip": Protocol("remoteclip", "", False),
    "skyscript": Protocol("skyscript", "a satellite image. ", True),
}


def parse_variant(variant: str) -> tuple[Protocol, bool]:
    """'skyscript-autocast' -> (SkyScript protocol, autocast=True)."""
    name, _, rest = variant.partition("-")
    if name not in PROTOCOLS or rest not in ("", "autocast"):
        raise RsmEvalError(
            f"unknown evaluation variant {variant!r}: expected one of "
            f"{sorted(PROTOCOLS)}, optionally with '-autocast'"
        )
    return PROTOCOLS[name], rest == "autocast"
