"""A seeded sentence generator for synthetic speech: templates over word lists rich in bilabials,
rounded and open vowels, with questions, exclamations, numbers and names. `sentence(rng, emotion)`."""

from __future__ import annotations

import numpy as np

NAMES = (
    "Bob", "Mary", "Paul", "Pam", "Maria", "Bill", "Molly", "Bruno", "Ruth", "Wanda", "Mike", "Barbara",
    "Paula", "Ben", "Bobby", "Margo", "Omar", "Hugo", "Ruby", "Woody", "Fatima", "Victor", "Walter",
    "Emma", "Tom", "Anna", "Mohammed", "Sophie", "Lou", "Maeve", "Boris", "Yoko", "Carlos", "Priya",
    "Jim", "Nora", "Otto", "Rosa", "Pablo", "Monica", "Owen", "Ava", "Sam", "Lee", "Hannah", "Kofi",
)
ADJECTIVES = (
    "big", "blue", "brown", "pale", "bright", "broken", "smooth", "cool", "wide", "old", "round",
    "huge", "tiny", "warm", "wet", "purple", "loud", "soft", "bold", "mighty", "humble", "beautiful",
    "happy", "muddy", "simple", "proper", "moody", "foolish", "odd", "awful", "famous", "careful",
    "heavy", "cheap", "fresh", "plump", "bumpy", "cloudy", "golden", "modern", "narrow", "open",
)
NOUNS = (
    "map", "boat", "ball", "moon", "spoon", "box", "bomb", "bubble", "pump", "boot", "broom", "apple",
    "mop", "mouse", "owl", "house", "shoe", "rope", "book", "phone", "window", "office", "pool", "road",
    "market", "bottle", "puppy", "baby", "problem", "plum", "pepper", "mountain", "room", "tube", "coat",
    "father", "mother", "doctor", "garden", "car", "park", "lamp", "harbour", "piano", "robot", "tower",
    "flower", "oven", "wolf", "fox", "bus", "camera", "umbrella", "pillow", "balloon", "movie", "menu",
    "bridge", "jar", "vase", "cow", "zoo", "tomato", "potato", "sofa", "photo", "museum", "bakery",
)
PLURALS = (
    "maps", "boats", "balls", "spoons", "boxes", "bubbles", "boots", "apples", "books", "phones",
    "bottles", "puppies", "problems", "plums", "mountains", "rooms", "flowers", "buses", "balloons",
    "movies", "bridges", "jars", "cows", "tomatoes", "potatoes", "photos", "pies", "cups", "owls",
)
VERBS_PAST = (
    "bought", "moved", "painted", "opened", "dropped", "pushed", "pulled", "borrowed", "watched",
    "found", "brought", "bumped", "grabbed", "wrapped", "swapped", "mopped", "picked", "built",
    "wanted", "loved", "followed", "popped", "stopped", "fixed", "called", "kept", "washed", "threw",
    "showed", "taught", "mailed", "parked", "booked", "cooked", "hoped for", "forgot", "baked",
)
VERBS_BASE = (
    "buy", "move", "paint", "open", "drop", "push", "pull", "borrow", "watch", "find", "bring",
    "grab", "wrap", "swap", "pick", "build", "follow", "stop", "fix", "call", "keep", "wash", "throw",
    "show", "book", "cook", "bake", "remember", "prove", "improve", "remove", "approve", "choose",
)
PLACES = (
    "the market", "the moon", "the pool", "the museum", "the office", "the harbour", "the bakery",
    "the zoo", "the mountain", "Paris", "Boston", "Bombay", "Mumbai", "Moscow", "Budapest", "Rome",
    "Oslo", "Peru", "Toronto", "the park", "the room upstairs", "the old house", "the blue boat",
    "the top of the tower", "the bottom of the box", "the west coast", "the south pole", "Madrid",
)
TIMES = (
    "this morning", "tomorrow", "by noon", "on Monday", "on Tuesday", "at two o'clock", "in May",
    "every summer", "before lunch", "after the movie", "at midnight", "last week", "in the autumn",
    "at about 5 pm", "all afternoon", "once a month", "in 1999", "by Friday", "soon", "right now",
)
ADVERBS = (
    "slowly", "boldly", "happily", "properly", "promptly", "calmly", "truly", "rapidly", "barely",
    "absolutely", "probably", "obviously", "completely", "quietly", "madly", "proudly", "openly",
)
INTERJECTIONS = {
    "neutral": ("Well,", "So,", "Okay,", "Now,", "By the way,", "Anyway,"),
    "happy": ("Wow,", "Oh boy,", "Hooray,", "Great news,", "Oh wonderful,", "Brilliant,"),
    "sad": ("Oh no,", "Sadly,", "I'm afraid", "Unfortunately,", "Oh well,", "Alas,"),
    "angry": ("Look,", "Enough,", "Listen to me,", "Come on,", "Stop it,", "Oh, for goodness sake,"),
    "surprised": ("Oh my,", "Whoa,", "What,", "Oh wow,", "Really,", "No way,"),
}
SMALL_NUMBERS = ("two", "three", "four", "five", "seven", "nine", "twelve", "fifteen", "forty")


def _number(rng: np.random.Generator) -> str:
    """A number as digits or words; festival reads digits aloud itself."""
    if rng.random() < 0.5:
        return str(SMALL_NUMBERS[rng.integers(len(SMALL_NUMBERS))])
    return str(int(rng.choice([rng.integers(2, 20), rng.integers(20, 100), rng.integers(100, 2000)])))


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def _noun_phrase(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.35:
        return f"the {_pick(rng, ADJECTIVES)} {_pick(rng, NOUNS)}"
    if r < 0.55:
        return f"a {_pick(rng, NOUNS)}"
    if r < 0.75:
        return f"{_number(rng)} {_pick(rng, ADJECTIVES)} {_pick(rng, PLURALS)}"
    if r < 0.9:
        return f"{_pick(rng, NAMES)}'s {_pick(rng, NOUNS)}"
    return f"the {_pick(rng, NOUNS)} and the {_pick(rng, NOUNS)}"


def _subject(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.5:
        return _pick(rng, NAMES)
    if r < 0.75:
        return _pick(rng, ("I", "We", "You", "They", "She", "He"))
    return _noun_phrase(rng).capitalize()


# Each template is a function of rng returning (text without final punctuation, is_question).
def _t_statement(rng):
    s = f"{_subject(rng)} {_pick(rng, VERBS_PAST)} {_noun_phrase(rng)}"
    if rng.random() < 0.5:
        s += f" at {_pick(rng, PLACES)}" if rng.random() < 0.5 else f" {_pick(rng, TIMES)}"
    return s, False


def _t_yes_no(rng):
    aux = _pick(rng, ("Did", "Would", "Could", "Should", "Will", "Can"))
    s = f"{aux} {_subject(rng).lower() if rng.random() < 0.3 else _pick(rng, NAMES)} {_pick(rng, VERBS_BASE)}"
    s += f" {_noun_phrase(rng)}"
    if rng.random() < 0.4:
        s += f" {_pick(rng, TIMES)}"
    return s, True


def _t_wh(rng):
    wh = _pick(rng, ("Who", "Why", "How", "When", "Where"))
    if wh == "Who":
        return f"Who {_pick(rng, VERBS_PAST)} {_noun_phrase(rng)}", True
    return f"{wh} did {_pick(rng, NAMES)} {_pick(rng, VERBS_BASE)} {_noun_phrase(rng)}", True


def _t_how_many(rng):
    return f"How many {_pick(rng, PLURALS)} are there in {_pick(rng, PLACES)}", True


def _t_travel(rng):
    verb = _pick(rng, ("moved to", "flew to", "walked to", "went back to", "rowed to", "drove to"))
    return f"{_pick(rng, NAMES)} {verb} {_pick(rng, PLACES)} {_pick(rng, TIMES)}", False


def _t_count(rng):
    return (f"There were {_number(rng)} {_pick(rng, PLURALS)} and {_number(rng)} "
            f"{_pick(rng, PLURALS)} in {_pick(rng, PLACES)}"), False


def _t_adverb(rng):
    return f"{_subject(rng)} {_pick(rng, ADVERBS)} {_pick(rng, VERBS_PAST)} {_noun_phrase(rng)}", False


def _t_compound(rng):
    a, _ = _t_statement(rng)
    b, _ = _t_statement(rng)
    return f"{a}, {_pick(rng, ('but', 'and', 'so', 'because', 'while'))} {b[0].lower() + b[1:]}", False


def _t_quote(rng):
    return (f"Please {_pick(rng, VERBS_BASE)} {_noun_phrase(rng)} before {_pick(rng, NAMES)} "
            f"comes home"), False


def _t_price(rng):
    return (f"The {_pick(rng, NOUNS)} cost {_number(rng)} pounds and {_number(rng)} pence "
            f"{_pick(rng, TIMES)}"), False


TEMPLATES = (_t_statement, _t_statement, _t_yes_no, _t_wh, _t_how_many, _t_travel, _t_count,
             _t_adverb, _t_compound, _t_quote, _t_price)


def sentence(rng: np.random.Generator, emotion: str = "neutral") -> str:
    """One or two generated sentences (about 4 to 25 words); exclamations lean on `emotion`."""
    if emotion not in INTERJECTIONS:
        raise ValueError(f"emotion must be one of {sorted(INTERJECTIONS)}, got {emotion!r}")
    parts = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        body, question = TEMPLATES[int(rng.integers(len(TEMPLATES)))](rng)
        if rng.random() < (0.15 if emotion == "neutral" else 0.45):
            first, _, rest = body.partition(" ")
            if first not in NAMES and first != "I":
                first = first.lower()
            body = f"{_pick(rng, INTERJECTIONS[emotion])} {first} {rest}"
        end = "?" if question else ("!" if emotion != "neutral" and rng.random() < 0.5 else ".")
        parts.append(body[0].upper() + body[1:] + end)
    text = " ".join(parts)
    # Leave festival's Scheme strings safe: no double quotes or backslashes ever appear.
    return text.replace('"', "").replace("\\", "")
