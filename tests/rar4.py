"""A tiny writer of RAR 4 archives with "stored" (uncompressed) members, for tests only.

Debian has no free tool that *creates* RAR (7-Zip and unar only read it), so tests write the
simple RAR 4 block format themselves: marker, archive header, one file header (method 0x30,
store) per member followed by its bytes, end-of-archive block. Reading always goes through
libarchive, the maintained reader the workflow uses. Format: RARLAB's technote.txt (RAR 4).
"""

from __future__ import annotations

import struct
import zlib

_MARKER = b"Rar!\x1a\x07\x00"
_HOST_UNIX = 3
_DIRECTORY = 0x00E0  # LHD_DIRECTORY: all dictionary-size bits set
_LONG_BLOCK = 0x8000


def _block(kind: int, flags: int, body: bytes) -> bytes:
    head = struct.pack("<BHH", kind, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head


def rar4(members: dict[str, bytes | None], *, dos_time: int = 0x5A210000) -> bytes:
    """A RAR 4 archive of members (name -> bytes; None makes a directory), names '/'-separated."""
    out = [_MARKER, _block(0x73, 0, b"\0" * 6)]
    for name, data in members.items():
        raw = name.encode("utf-8")
        is_dir = data is None
        payload = b"" if is_dir else data
        mode = 0o40755 if is_dir else 0o100644
        fields = struct.pack(
            "<IIBIIBBHI",
            len(payload),  # PACK_SIZE
            len(payload),  # UNP_SIZE
            _HOST_UNIX,
            zlib.crc32(payload),
            dos_time,
            20,  # UNP_VER 2.0
            0x30,  # METHOD: store
            len(raw),
            mode,
        )
        out.append(_block(0x74, _LONG_BLOCK | (_DIRECTORY if is_dir else 0), fields + raw))
        out.append(payload)
    out.append(_block(0x7B, 0x4000, b""))
    return b"".join(out)
