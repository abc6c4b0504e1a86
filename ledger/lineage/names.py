"""Names (namespaces, datasets, jobs, principals): one spelling per name.

Two spellings of one name, NFC and NFD (`é` as one code point or as `e` and a combining accent),
are one name: every name is normalised to NFC where it enters (intake, paths, node ids). A name
holding a bidirectional control (U+202E RIGHT-TO-LEFT OVERRIDE shows `gpj.exe` as `exe.jpg`) or a
zero-width character (U+200B makes `customers` and `cus\u200btomers` look alike) is refused. Pure.
"""

from __future__ import annotations

import re
import unicodedata

# Bidirectional controls (ALM, LRM, RLM, LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI), zero-width
# and invisible characters (ZWSP, ZWNJ, ZWJ, WORD JOINER, the invisible operators, BOM, MVS).
_INVISIBLE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u180e]")


def invisible(value: str) -> str | None:
    """The first bidirectional control or zero-width character in `value`, as `U+XXXX (NAME)`."""
    m = _INVISIBLE.search(value)
    if m is None:
        return None
    c = m.group()
    return f"U+{ord(c):04X} ({unicodedata.name(c, 'format character')})"


def nfc(value: str) -> str:
    """`value` in Unicode normalisation form C (the same object when it is already)."""
    return value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)
