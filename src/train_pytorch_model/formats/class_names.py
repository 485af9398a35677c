"""Class names in one Unicode form, wherever they are read.

A zip made on a Mac stores 'café' as 'cafe' followed by a combining accent (NFD), while a folder made on
Windows or Linux holds the precomposed 'é' (NFC). Both spell the same word, so both name the same class: every
class name is put into NFC where it is read (folder names, ImageDirectory and COCO categories, label maps), and
so it is compared, recorded and written in that one form.
"""

from __future__ import annotations

import unicodedata

FORM = "NFC"


def class_name(text: object) -> str:
    """The one spelling of a class name: its text in Unicode NFC."""
    return unicodedata.normalize(FORM, str(text))
