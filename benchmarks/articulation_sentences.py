"""The sentences `kfusion bench articulation` has its synthetic voices read: written for the benchmark, not
drawn from the synth generator, and full of p, b and m (benchmarks/bench_articulation.py)."""

SENTENCES = (
    "Bob bought a map of the big bay by the boat.",
    "My mom made apple pie for the baby.",
    "Pam and Ben sat by the lamp at the top of the ramp.",
    "A cup of warm soup helps me after a bad day.",
    "The mob stopped the bus by the old pump.",
    "Put the black pan back on the stove, Bill.",
    "Barbara swam past the palm by the pond.",
    "Mark paid for the map and a bottle of wine.",
    "Palm trees bend in the hot summer wind.",
    "Maybe the bright lamp will calm the small baby.",
    "Pack the bags and park the car by the barn.",
    "Bright bubbles popped above the bath.",
    "The pilot banked the plane above the harbour.",
    "Please pass the butter and the warm bread.",
    "Bears might climb up the pine by the cabin.",
    "A lot of people watched the parade from the bridge.",
    "Amber lamps hung above the market stalls.",
    "Father opened the box of old maps.",
    "The cowboy lost his hat on the bumpy path.",
    "Mabel hopes to buy a top hat in Bombay.",
)
# `--engine intl`: sentences in each held-out festival voice's own language, written for this benchmark in
# plain ASCII (festival's Czech and Finnish front ends take Latin-2 / Latin-1 bytes, so no diacritics).
INTL_SENTENCES = {
    "italian": ("Il babbo porta la mappa blu e poi mangia la pasta.", "Mamma compra un bel pomodoro per la zuppa.",
                "Paolo ama ballare sulla spiaggia di Bari.", "Il bambino beve il latte dalla tazza bianca.",
                "Maria prepara una buona pizza per il babbo.", "Un piccolo cane abbaia sempre a mezzanotte.",
                "Bianca parla piano con il maestro di musica.", "Le pere e le mele sono sopra il tavolo.",
                "Abbiamo preso il treno per Bologna ieri mattina.", "Il pittore dipinge un campo di papaveri."),
    "czech": ("Babicka pije pivo a maminka pece buchty.", "Pan Novak ma maly byt v Praze.",
              "Bara pomaha mame s obedem.", "Petr a Pavel jedou autobusem do Brna.",
              "Mame doma bily papir a modrou barvu.", "Pes spi pod lampou u plotu.", "Maly Bobek papa polevku.",
              "Po obede pujdeme na prochazku parkem.", "Baba bere maso z trhu.", "Tomas ma rad pomerance a banany."),
    "finnish": ("Pappa ja mamma ajavat bussilla pois.", "Maija ostaa omenan ja banaanin kaupasta.",
                "Pekka pelaa pallolla puistossa.", "Mummo paistaa pullaa aamulla.",
                "Pieni poika ajaa punaisella pyoralla.", "Me menemme mokille maanantaina.",
                "Puut ovat paksuja ja pitkia.", "Tampereen sataman laiva on iso.", "Kalle maalaa talon pihalla.",
                "Marja ja Pauli ampuvat palloa maaliin."),
    "catalan": ("El pare porta el mapa blau i menja pa amb tomaquet.", "La mare compra pomes al mercat de Barcelona.",
                "Pau i Maria passegen per la platja.", "El meu amic beu aigua amb pressa.",
                "Bona tarda, vols un entrepa de pernil?", "Les barques blanques estan al port.",
                "Pere menja pa amb oli cada mati.", "La bomba ha petat a la placa.",
                "Tinc moltes ganes de menjar mandarines.", "Un bon mapa ens ajuda a passejar."),
}
