"""Random identifiers: UUID version 4 in its canonical text.

Intake makes two per lead (the lead's and its event's). `str(uuid.uuid4())` builds a
UUID object, an int and then the text, over 2 µs; setting the version and variant bits
in the random bytes and formatting their hex takes under half of that, same text.
"""

from __future__ import annotations

import os


def random_uuid() -> str:
    """A random (version 4, RFC 4122 variant) UUID as lower-case hex with hyphens."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
