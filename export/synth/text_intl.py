"""Seeded sentences in the languages of festival's non-English training voices: `sentence_in(rng, language)`.

Subject, verb, an adjective and a noun that agree, then a place or time: "Paolo compra la mela rossa al
mercato." Plain ASCII (festival's Czech and Finnish front ends take Latin-2 / Latin-1 bytes), so the words
are chosen to need no diacritics. These are not the sentences `kfusion bench articulation --engine intl`
speaks (benchmarks/bench_articulation.py INTL_SENTENCES, written by hand).
"""

from __future__ import annotations

import numpy as np

WORDS = {
    "italian": {
        "names": ("Paolo", "Maria", "Bruno", "Marco", "Anna", "Pietro", "Lucia", "Matteo", "Giulia", "Roberto",
                  "Bianca", "Simone", "Elena", "Fabio", "Marta", "Tommaso", "Sara", "Davide"),
        "verbs": ("porta", "compra", "mangia", "prende", "guarda", "apre", "vende", "cerca", "trova", "lava",
                  "paga", "manda", "butta", "ama", "dipinge", "rompe", "sposta", "tiene", "vuole", "chiude"),
        "nouns": ("la mela", "la borsa", "la pizza", "la lampada", "la barca", "la pentola", "la mappa",
                  "la torta", "la bottiglia", "la palla", "la camicia", "la moneta", "la finestra", "la scatola",
                  "la porta", "la tazza", "la penna", "la coperta", "la maglia", "la bambola"),
        "adjectives": ("bella", "piccola", "buona", "grande", "bianca", "rossa", "vecchia", "nuova", "povera",
                       "morbida", "piena", "bassa", "calda", "blu", "pesante", "comoda", "lunga", "vuota"),
        "tails": ("a Milano", "per la mamma", "dopo pranzo", "sempre", "domani mattina", "in piazza",
                  "al mercato", "con il babbo", "senza parlare", "sul tavolo", "vicino al ponte", "ogni mattina",
                  "a Roma", "per il bambino", "prima di cena", "in montagna", "a Bologna", "per sempre"),
        "and": "e",
    },
    "czech": {
        "names": ("Petr", "Pavel", "Marie", "Bara", "Tomas", "Jana", "Martin", "Eva", "Milan", "Lucie", "Honza",
                  "Monika", "Vojta", "Alena", "Bohous", "Pepa", "Marketa", "Vlasta"),
        "verbs": ("kupuje", "nese", "vidi", "hleda", "prodava", "bere", "maluje", "vari", "posila", "meni",
                  "hlida", "potkava", "zavira", "otevira", "ma", "chce", "dava", "balila", "myje", "prinesl"),
        "nouns": ("mapu", "babovku", "polevku", "lampu", "barvu", "kapsu", "bundu", "vodu", "rybu", "knihu",
                  "pumpu", "mrkev", "kabelku", "banku", "tasku", "lopatu", "bednu", "postel", "dobrotu", "zpravu"),
        "adjectives": ("malou", "velkou", "bilou", "modrou", "starou", "novou", "dobrou", "teplou", "plnou",
                       "pomalou", "pekne", "hnedou", "cernou", "prazdnou", "mokrou", "levnou"),
        "tails": ("v Praze", "pro mamu", "po obede", "u babicky", "na zahrade", "v parku", "s bratrem",
                  "kazdy den", "v pondeli", "za plotem", "v Brne", "pomalu", "doma", "na poste", "v pokoji",
                  "u mostu", "pod lampou", "na podzim"),
        "and": "a",
    },
    "finnish": {
        "names": ("Pekka", "Maija", "Pauli", "Marja", "Mikko", "Anna", "Timo", "Sanna", "Juha", "Minna", "Olli",
                  "Paula", "Heikki", "Emma", "Matti", "Ilona", "Jussi", "Piia"),
        "verbs": ("ostaa", "ottaa", "maalaa", "pesee", "kantaa", "myy", "etsii", "tuo", "vie", "avaa",
                  "rakastaa", "lukee", "kuvaa", "korjaa", "lainaa", "hakee", "antaa", "piilottaa"),
        "nouns": ("omenan", "pallon", "kirjan", "lampun", "auton", "talon", "veneen", "pullon", "kupin",
                  "paidan", "laukun", "kartan", "lipun", "takin", "banaanin", "kameran", "pianon", "maton"),
        "adjectives": ("ison", "pienen", "vanhan", "uuden", "punaisen", "sinisen", "kauniin", "halvan",
                       "valkoisen", "mustan", "kalliin", "ruskean", "pyorean", "oudon", "hienon"),
        "tails": ("aamulla", "kaupasta", "puistossa", "Tampereella", "illalla", "bussilla", "kotona", "torilla",
                  "maanantaina", "sateella", "Oulussa", "nopeasti", "hitaasti", "taas", "mummolle", "papalle",
                  "pojalle", "Porissa"),
        "and": "ja",
    },
}
LANGUAGES = tuple(WORDS)
TWO_CLAUSES_PROB = 0.3


def _clause(rng: np.random.Generator, w: dict, language: str) -> str:
    def pick(key: str) -> str:
        return w[key][int(rng.integers(len(w[key])))]

    name, verb, noun, adj, tail = pick("names"), pick("verbs"), pick("nouns"), pick("adjectives"), pick("tails")
    if language == "italian":  # the adjective follows the noun
        return f"{name} {verb} {noun} {adj} {tail}"
    return f"{name} {verb} {adj} {noun} {tail}"


def sentence_in(rng: np.random.Generator, language: str) -> str:
    """One sentence (sometimes two clauses joined by 'and') in `language`, from its own word lists."""
    if language not in WORDS:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    w = WORDS[language]
    text = _clause(rng, w, language)
    if rng.random() < TWO_CLAUSES_PROB:
        text += f" {w['and']} " + _clause(rng, w, language)
    return text + "."
