"""The scene captioners: a scene class's attributes to its candidate captions.

One function per scene class, named after it: every caption describes what the drawer drew
from the same attributes (counts, colours, orientation, position), in RSITMD's plain style.
A captioner draws nothing at random; the benchmark picks five of its candidates.
"""

from __future__ import annotations

from .primitives import Attrs

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(2, "bridge") -> "two bridges"``."""
    return f"{word(n)} {noun if n == 1 else (plural or noun + 's')}"


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


FLOW = {
    "horizontal": "from left to right",
    "vertical": "from top to bottom",
    "diagonal": "diagonally",
}


OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def farmland(a: Attrs) -> list[str]:
    n, o = int(a["n"]), str(a["orientation"])
    c1, c2 = list(a["colours"])
    adv = o + "ly"
    return [
        f"{cap(count(n, 'strip'))} of farmland are arranged {adv}.",
        f"The farmland is divided into {count(n, o + ' field')} of {c1} and {c2}.",
        f"{cap(c1)} and {c2} fields lie side by side in {o} stripes of farmland.",
        f"There are {count(n, 'field')} in the farmland.",
        f"Many {c1} and {c2} farmlands with {o} boundaries.",
        f"Some {o} field stripes in {c1} and {c2} cover the whole farmland.",
        f"The farmland consists of {count(n, 'long ' + o + ' plot')}.",
        f"Alternating {c1} and {c2} plots of farmland run {adv}.",
    ]


def forest(a: Attrs) -> list[str]:
    dens, road = str(a["density"]), str(a["road"])
    layout = (
        "The trees in the forest are densely packed."
        if dens == "dense"
        else "Trees are scattered sparsely in this forest with bare ground between them."
    )
    if road == "none":
        road_caps = [
            "No road crosses the forest.",
            f"A {dens} forest without any road.",
            "Dark green trees cover the forest completely.",
        ]
    else:
        road_caps = [
            f"A {road} road passes through the forest.",
            f"A {dens} forest is cut by a {road} path.",
            f"Dark green trees cover the forest except for a {road} road.",
        ]
    if a["clearing"]:
        road_caps += [
            "A small clearing of bare ground lies inside the forest.",
            f"The {dens} forest has an open brown clearing.",
        ]
    return [
        f"A {dens} forest with many dark green trees.",
        layout,
        f"Many green trees form a {dens} forest.",
        f"This is a {dens} piece of forest.",
        f"Lots of trees grow in a {dens} forest.",
        *road_caps,
    ]


def river(a: Attrs) -> list[str]:
    o, w, b = str(a["direction"]), str(a["width"]), str(a["bank"])
    flow = FLOW[o]
    return [
        f"A {w} river flows {flow} through {b} land.",
        f"A {w} blue river runs {flow}.",
        f"The river crosses the image {flow}.",
        f"There is a {w} river with {b} banks.",
        f"{cap(b)} land lies on both sides of the river.",
        f"A curved {w} river winds {flow}.",
        f"The {w} river is flanked by {b} banks.",
        f"A {o} river with {b} shores.",
    ]


def bridge(a: Attrs) -> list[str]:
    n, c, o, b = int(a["n"]), str(a["colour"]), str(a["direction"]), str(a["bank"])
    flow = FLOW[o]
    verb = "crosses" if n == 1 else "cross"
    return [
        f"{cap(count(n, c + ' bridge'))} {verb} a river flowing {flow}.",
        f"There {'is' if n == 1 else 'are'} {count(n, 'bridge')} over the blue river.",
        f"The river flows {flow} under {count(n, 'bridge')}.",
        f"{cap(count(n, c + ' bridge'))} {'connects' if n == 1 else 'connect'} the {b} banks.",
        f"A {o} river with {count(n, 'bridge')} on it.",
        f"{cap(count(n, 'road'))} {verb} the water on {count(n, c + ' bridge')}.",
        f"The {b} banks of the river are joined by {count(n, 'bridge')}.",
        f"A {c} bridge spans a {o} river.",
    ]


def beach(a: Attrs) -> list[str]:
    side, boats = str(a["side"]), int(a["boats"])
    float_ = "floats" if boats == 1 else "float"
    at = f"on the {side}" if side in ("left", "right") else f"at the {side}"
    boat_caps = (
        [
            "There are no boats near the beach.",
            f"An empty beach with the sea {at}.",
        ]
        if boats == 0
        else [
            f"{cap(count(boats, 'white boat'))} {float_} on the sea near the beach.",
            f"The sea beside the beach carries {count(boats, 'small boat')}.",
        ]
    )
    return [
        f"The sea is {at} of a yellow beach.",
        f"A sandy beach with the blue sea {at}.",
        f"White waves wash the beach from the {side}.",
        "Yellow sand and blue water meet on the beach.",
        f"Part of the beach is covered by sea on the {side} side.",
        f"A long beach lies to the {OPPOSITE[side]} of the sea.",
        *boat_caps,
    ]


def desert(a: Attrs) -> list[str]:
    t, o = str(a["tone"]), str(a["orientation"])
    shrub_caps = (
        ["A few green shrubs dot the desert.", f"Some small plants grow on the {t} desert."]
        if a["shrubs"]
        else ["The desert is bare without any plants.", f"No vegetation grows on the {t} desert."]
    )
    return [
        f"A {t} desert with {o} dunes.",
        f"Sand dunes run {FLOW[o]} across the desert.",
        f"Ripples of {t} sand cover the desert.",
        f"This {t} desert is full of {o} ridges.",
        f"Many parallel dunes lie {o}ly in the desert.",
        *shrub_caps,
    ]


def residential(a: Attrs) -> list[str]:
    rows, o = int(a["rows"]), str(a["orientation"])
    roof = "red and grey" if a["roof"] == "mixed" else str(a["roof"])
    return [
        f"A residential area with {count(rows, 'row')} of houses with {roof} roofs.",
        f"{cap(count(rows, 'row'))} of houses line {o} streets in the residential area.",
        f"Many houses with {roof} roofs are in a residential area.",
        f"The residential area has {o} streets.",
        f"Houses with {roof} roofs are neatly arranged in this residential district.",
        f"A residential area with {count(rows, 'row')} of buildings along {o} roads.",
        f"Small residential houses stand in {o} rows.",
    ]


def airport(a: Attrs) -> list[str]:
    r, p, o = int(a["runways"]), int(a["planes"]), str(a["orientation"])
    runway = "runway" if r == 1 else "runways"
    wait = "waits" if p == 1 else "wait"
    return [
        f"{cap(count(p, 'white plane'))} {'is' if p == 1 else 'are'} parked at the airport.",
        f"An airport with {count(r, o + ' runway')}.",
        f"There {'is' if p == 1 else 'are'} {count(p, 'plane')} near the {runway} of the airport.",
        f"The airport has {count(r, 'grey runway')} running {o}ly.",
        f"{cap(count(p, 'airplane'))} and {count(r, 'runway')} in an airport.",
        f"Planes stand on the apron beside the {o} {runway} of the airport.",
        f"An airport where {count(p, 'aircraft', 'aircraft')} {wait} by {count(r, 'runway')}.",
    ]


def parking(a: Attrs) -> list[str]:
    rows, full, o = int(a["rows"]), str(a["fullness"]), str(a["orientation"])
    cars = "Cars of many colours" if a["cars"] == "colourful" else "White cars"
    state = (
        "The parking lot is almost full."
        if full == "full"
        else "About half of the spaces in the parking lot are empty."
    )
    return [
        f"A parking lot with {count(rows, 'row')} of cars.",
        state,
        f"{cars} are parked in {count(rows, o + ' row')} in the parking lot.",
        f"Many cars are parked {o}ly in a {full} parking lot.",
        f"{cars} fill a {full} parking lot.",
        f"A {full} parking lot with {o} rows.",
        f"The parking lot holds {count(rows, 'long row')} of parked cars.",
    ]


def baseballfield(a: Attrs) -> list[str]:
    n, pos = int(a["n"]), str(a["position"])
    where = "side by side" if n == 2 else ("in the centre" if pos == "centre" else f"on the {pos}")
    if a["trees"]:
        trees = [
            "Some trees grow along the edge of the baseball field.",
            "A line of trees stands behind the baseball diamond.",
        ]
    else:
        trees = [
            "The baseball field is surrounded by open lawn.",
            "No trees stand near the baseball field.",
        ]
    if a["stands"]:
        trees.append("Grey stands are built behind home plate of the baseball field.")
    return [
        f"{cap(count(n, 'baseball field'))} with brown diamonds {where}."
        if n == 2
        else f"A baseball field with a brown diamond {where}.",
        f"{cap(count(n, 'baseball field'))} on green grass.",
        f"The brown infield of the baseball field is {where}."
        if n == 1
        else "Two brown baseball infields lie next to each other.",
        f"There {'is' if n == 1 else 'are'} {count(n, 'baseball diamond')} {where}.",
        f"A green lawn with {count(n, 'baseball field')}.",
        *trees,
    ]


def storagetanks(a: Attrs) -> list[str]:
    n, s, g = int(a["n"]), str(a["size"]), str(a["ground"])
    arr = "a row" if a["arrangement"] == "row" else "a grid"
    return [
        f"{cap(count(n, 'white storage tank'))} stand on {g} ground.",
        f"There are {count(n, s + ' round storage tank')}.",
        f"{cap(count(n, s + ' white tank'))} are arranged in {arr}.",
        f"Some storage tanks are arranged in {arr} on {g} ground.",
        f"{cap(count(n, 'round white oil tank'))} in an industrial yard.",
        f"The {s} storage tanks form {arr}.",
        f"A group of {word(n)} {s} tanks on {g} land.",
    ]


def pond(a: Attrs) -> list[str]:
    n, w, pos = int(a["n"]), str(a["water"]), str(a["position"])
    where = "side by side" if n == 2 else ("in the centre" if pos == "centre" else f"at the {pos}")
    return [
        f"{cap(count(n, w + ' pond'))} {'lies' if n == 1 else 'lie'} {where} of a meadow."
        if n == 1
        else f"Two {w} ponds lie {where} in a meadow.",
        f"{cap(count(n, 'pond'))} surrounded by green grass.",
        f"There {'is' if n == 1 else 'are'} {count(n, w + ' pond')} in the field.",
        f"The water of the pond{'s' if n == 2 else ''} is {w}.",
        f"A meadow with {count(n, 'small pond')} {where}.",
        f"{cap(count(n, 'irregular pond'))} of {w} water on green land.",
        f"Green grass grows around the {w} pond{'s' if n == 2 else ''}.",
    ]
