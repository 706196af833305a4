"""The words of a GRID corpus clip, read from its name: GRID's sentences follow a six-word grammar, and each
file name spells one word per letter (command, colour, preposition, letter, digit, adverb).

    grid_sentence("grid_bbaf2n")  # -> "bin blue at eff two now"
"""

from __future__ import annotations

import re

COMMANDS = {"b": "bin", "l": "lay", "p": "place", "s": "set"}
COLOURS = {"b": "blue", "g": "green", "r": "red", "w": "white"}
PREPOSITIONS = {"a": "at", "b": "by", "i": "in", "w": "with"}
# The letter is spoken as its name; written out so that a synthesiser says "ay", not the article "a". GRID's
# speakers are British, so z is "zed". GRID has no w (it would be three syllables).
LETTER_NAMES = {"a": "ay", "b": "bee", "c": "see", "d": "dee", "e": "ee", "f": "eff", "g": "gee", "h": "aitch",
                "i": "eye", "j": "jay", "k": "kay", "l": "el", "m": "em", "n": "en", "o": "oh", "p": "pee",
                "q": "cue", "r": "ar", "s": "ess", "t": "tee", "u": "you", "v": "vee", "x": "ex", "y": "why",
                "z": "zed"}
DIGITS = {"z": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
          "8": "eight", "9": "nine"}
ADVERBS = {"a": "again", "n": "now", "p": "please", "s": "soon"}
GRAMMAR = (COMMANDS, COLOURS, PREPOSITIONS, LETTER_NAMES, DIGITS, ADVERBS)
CODE_LETTERS = 6


def grid_sentence(clip_id: str) -> str:
    """The spoken words of a GRID clip from its name; the code is the name's last six characters
    ("grid_bbaf2n", "bbaf2n.mpg" and "id2_vcd_swwp2s" all work)."""
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", clip_id.strip())
    code = stem[-CODE_LETTERS:].lower()
    if len(code) != CODE_LETTERS or not all(c in table for c, table in zip(code, GRAMMAR)):
        raise ValueError(f"{clip_id!r} does not end in a GRID code: six characters, command {sorted(COMMANDS)}, "
                         f"colour {sorted(COLOURS)}, preposition {sorted(PREPOSITIONS)}, a letter, digit "
                         f"{sorted(DIGITS)} (z = zero), adverb {sorted(ADVERBS)}, e.g. 'bbaf2n'")
    return " ".join(table[c] for c, table in zip(code, GRAMMAR))
