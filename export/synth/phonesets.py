"""Festival's non-English phone sets -> festival radio phones, the set the visemes and articulation scores use.

Each language's voices name their phones their own way (Italian `a1` is a stressed a, Finnish `p:` a long p,
Czech `s~` is sh). `to_radio(phone, language)` drops stress digits and length marks and maps what is left to
the radio phone whose mouth shape is nearest; bilabials stay p, b, m and every open a becomes aa, so
`export.articulation` scores any of these languages as it scores English.
"""

from __future__ import annotations

import re

LANGUAGES = ("italian", "czech", "finnish", "catalan")
_SILENCE = {"#": "pau", "##": "pau", "_": "pau", "pau": "pau"}
# Sounds spelled alike in every one of these phone sets (after stress and length are dropped).
_COMMON = {
    "p": "p", "b": "b", "m": "m", "f": "f", "v": "v", "t": "t", "d": "d", "n": "n", "l": "l", "r": "r",
    "k": "k", "g": "g", "s": "s", "z": "z", "j": "y", "w": "w", "h": "hh", "S": "sh", "Z": "zh",
    "a": "aa", "e": "eh", "E": "eh", "i": "iy", "o": "ow", "O": "ao", "u": "uw",
}
_BY_LANGUAGE = {
    # lp/pc_diphone: J = gn, L = gli, nf = the labiodental nasal of "inferno" (lips on teeth, not shut)
    "italian": {"ts": "s", "tS": "ch", "dz": "z", "dZ": "jh", "J": "n", "L": "l", "ng": "ng", "nf": "v"},
    # czech_*: c = ts, c~ = ch, ch = the velar fricative, r~ = the r-sh blend, n* = the velar n
    "czech": {"c": "s", "c~": "ch", "ch": "hh", "d~": "d", "t~": "t", "n~": "n", "n*": "ng", "dz": "z",
              "dz~": "jh", "r~": "zh", "r~*": "sh", "s~": "sh", "z~": "zh"},
    # *_fi_*_diphone: y = the rounded i of "yy", @ = the a of "ä", 7 = the rounded e of "ö"
    "finnish": {"y": "uw", "@": "ae", "&": "ae", "7": "ow", "T": "th", "D": "dh", "N": "ng", "L": "l"},
    # upc_ca_ona_hts: ax = schwa, rr = trilled r, J = ny, L = ll
    "catalan": {"ax": "ax", "rr": "r", "J": "n", "L": "l"},
}
_STRESS = re.compile(r"[0-9]+$")  # stress digits at the end of a phone (a1); length marks (p:) go first


def to_radio(phone: str, language: str) -> str:
    """One phone of `language`'s festival phone set -> the nearest festival radio phone."""
    if language not in _BY_LANGUAGE:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    if phone in _SILENCE:
        return _SILENCE[phone]
    table = _BY_LANGUAGE[language]
    long_off = phone.rstrip(":")
    # the phone as it is, without its length mark, then without its stress digit (Finnish 7 is a vowel)
    for base in (phone, long_off, _STRESS.sub("", long_off)):
        radio = table.get(base) or _COMMON.get(base)
        if radio:
            return radio
    raise ValueError(f"no radio phone for {language} phone {phone!r}; add it to export/synth/phonesets.py")


def phones_to_radio(phones: list[tuple[str, float, float]], language: str) -> list[tuple[str, float, float]]:
    """[(phone, start_s, end_s)] in `language`'s set -> the same times with radio phones."""
    return [(to_radio(p, language), s, e) for p, s, e in phones]
