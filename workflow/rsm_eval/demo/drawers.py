"""The scene drawers: a scene class's attributes (and the random stream) to 128x128 RGB pixels.

One function per scene class, named after it, all of the same signature; the table of
classes (:mod:`.classes`) pairs each with its attribute sampler and captioner. Each drawer
consumes the random stream in a fixed order, so one seed gives the same pixels.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .primitives import COLOURS, SIZE, Attrs, big, canvas, jit, orient, shade, texture, wave


def farmland(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    n, colours = int(a["n"]), list(a["colours"])
    img, d = canvas((0, 0, 0))
    edges = np.linspace(0, SIZE, n + 1)
    edges[1:-1] += rng.uniform(-SIZE / (5 * n), SIZE / (5 * n), n - 1)
    for i in range(n):
        y0, y1 = int(edges[i]), int(edges[i + 1])
        base = jit(COLOURS[colours[i % 2]], rng)
        d.rectangle((0, y0, SIZE, y1), fill=base)
        for y in range(y0 + 2, y1 - 1, 4):  # furrows run along the strip
            d.line((0, y, SIZE, y), fill=shade(base, -14), width=1)
        d.line((0, y1, SIZE, y1), fill=(70, 60, 45), width=2)
    return texture(orient(img, str(a["orientation"])), rng, grain=5, mottle=6)


def forest(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    dense = a["density"] == "dense"
    img, d = canvas(jit((34, 72, 38) if dense else (122, 112, 72), rng))
    n_trees = 420 if dense else 110
    xy = rng.uniform(-4, SIZE + 4, (n_trees, 2))
    radius = rng.uniform(3, 7.5, n_trees)
    tone = rng.integers(-16, 17, n_trees)
    for (x, y), r, t in zip(xy, radius, tone, strict=True):
        d.ellipse((x - r, y - r, x + r, y + r), fill=shade((38, 96, 44), int(t)))
    if a["clearing"]:
        cx, cy, r = *rng.uniform(30, 98, 2), rng.uniform(13, 19)
        d.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), fill=jit((150, 132, 88), rng))
    road = str(a["road"])
    if road != "none":
        c = rng.uniform(38, 90)
        ends = {
            "horizontal": (0, c, SIZE, c + rng.uniform(-12, 12)),
            "vertical": (c, 0, c + rng.uniform(-12, 12), SIZE),
            "diagonal": (0, rng.uniform(0, 20), SIZE, SIZE - rng.uniform(0, 20)),
        }[road]
        d.line(ends, fill=jit((176, 156, 116), rng), width=6)
    return texture(img, rng, grain=6, mottle=5)


def river(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    size = big(str(a["direction"]))
    bank = (82, 132, 62) if a["bank"] == "green" else (194, 172, 122)
    img, d = canvas(jit(bank, rng), size)
    width = int(rng.integers(9, 14) if a["width"] == "narrow" else rng.integers(24, 32))
    ys = size / 2 + rng.uniform(-14, 14) + wave(size + 1, rng, rng.uniform(4, 12), (70, 160))
    xs = np.arange(0, size + 1, 4)
    # A polygon between two offset edges: thick PIL lines leave seams at their joints.
    for half, colour in ((width / 2 + 3, shade(bank, -30)), (width / 2, jit((42, 84, 150), rng))):
        top = [(float(x), float(ys[x] - half)) for x in xs]
        bottom = [(float(x), float(ys[x] + half)) for x in xs[::-1]]
        d.polygon(top + bottom, fill=colour)
    return texture(orient(img, str(a["direction"])), rng, grain=5, mottle=6)


def bridge(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = canvas(jit((92, 136, 70) if a["bank"] == "green" else (194, 172, 122), rng))
    n = int(a["n"])
    cy = SIZE / 2 + rng.uniform(-12, 12)
    half = rng.uniform(14, 19)
    d.rectangle((0, cy - half - 3, SIZE, cy + half + 3), fill=(120, 110, 80))  # embankment
    d.rectangle((0, cy - half, SIZE, cy + half), fill=jit((40, 82, 148), rng))
    xs = (
        [SIZE / 2 + rng.uniform(-20, 20)] if n == 1 else [rng.uniform(22, 46), rng.uniform(82, 106)]
    )
    deck = jit(COLOURS[str(a["colour"])], rng, 8)
    for x in xs:
        d.line((x, 0, x, SIZE), fill=(150, 150, 148), width=5)  # road leading onto the bridge
        d.rectangle((x - 4, cy - half - 7, x + 4, cy + half + 7), fill=deck)
    return texture(orient(img, str(a["direction"])), rng, grain=5, mottle=5)


def beach(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = canvas(jit((224, 202, 152), rng))
    edge = SIZE * rng.uniform(0.38, 0.52) + wave(SIZE + 1, rng, 3.5, (20, 45))
    poly = [(0.0, 0.0)] + [(float(edge[y]), float(y)) for y in range(0, SIZE + 1, 4)]
    poly += [(0.0, float(SIZE))]
    d.polygon(poly, fill=jit((38, 98, 168), rng))
    d.line(poly[1:-1], fill=(236, 240, 240), width=3)  # surf line
    for _ in range(int(a["boats"])):
        bx, by = rng.uniform(6, float(edge.min()) - 16), rng.uniform(8, SIZE - 8)
        d.ellipse((bx, by - 2, bx + 9, by + 2), fill=(245, 245, 245))
    for _ in range(14):  # footprints and debris on the sand
        px, py = rng.uniform(float(edge.max()) + 6, SIZE), rng.uniform(0, SIZE)
        d.point((px, py), fill=(190, 170, 130))
    turn = {
        "left": None,
        "right": Image.Transpose.FLIP_LEFT_RIGHT,
        "top": Image.Transpose.ROTATE_270,
        "bottom": Image.Transpose.ROTATE_90,
    }[str(a["side"])]
    return texture(img if turn is None else img.transpose(turn), rng, grain=5, mottle=5)


def desert(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    size = big(str(a["orientation"]))
    base = (216, 186, 122) if a["tone"] == "yellow" else (206, 142, 82)
    base = jit(base, rng, 8)
    img, d = canvas(base, size)
    y = rng.uniform(2, 10)
    while y < size:
        ys = y + wave(size + 1, rng, rng.uniform(2, 5), (30, 70))
        crest = [(float(x), float(ys[x])) for x in range(0, size + 1, 4)]
        d.line(crest, fill=shade(base, 26), width=3)
        d.line([(x, yy + 3) for x, yy in crest], fill=shade(base, -34), width=2)
        y += rng.uniform(10, 17)
    if a["shrubs"]:
        for x, yy in rng.uniform(0, size, (40, 2)):
            d.ellipse((x - 1.5, yy - 1.5, x + 1.5, yy + 1.5), fill=(72, 96, 48))
    return texture(orient(img, str(a["orientation"])), rng, grain=4, mottle=5)


def residential(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = canvas(jit((118, 148, 92), rng))
    rows = int(a["rows"])
    band = SIZE / rows
    house = int(min(16, band - 12))
    for r in range(rows):
        y0 = r * band
        d.rectangle((0, y0, SIZE, y0 + 5), fill=jit((156, 156, 152), rng, 6))  # street
        x = rng.uniform(0, 6)
        while x + 10 < SIZE:
            roof = str(a["roof"])
            if roof == "mixed":
                roof = str(rng.choice(["red", "grey", "brown"]))
            hy = y0 + 8 + rng.uniform(0, max(0.0, band - 10 - house))
            d.rectangle((x + 2, hy + 2, x + 12, hy + house + 2), fill=(60, 70, 50))  # shadow
            d.rectangle((x, hy, x + 10, hy + house), fill=jit(COLOURS[roof], rng, 10))
            x += rng.uniform(14, 18)
    return texture(orient(img, str(a["orientation"])), rng, grain=5, mottle=4)


def _plane(d: ImageDraw.ImageDraw, x: float, y: float) -> None:
    white = (242, 242, 242)
    d.rectangle((x - 1.5, y - 8, x + 1.5, y + 8), fill=white)  # fuselage
    d.polygon([(x - 9, y + 1), (x + 9, y + 1), (x + 1.5, y - 3), (x - 1.5, y - 3)], fill=white)
    d.rectangle((x - 4, y + 6, x + 4, y + 8), fill=white)  # tail


def airport(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = canvas(jit((162, 166, 122), rng))
    d.rectangle((6, 8, 122, 50), fill=jit((152, 152, 150), rng, 6))  # apron
    y = rng.uniform(64, 76)
    for _ in range(int(a["runways"])):
        d.rectangle((0, y, SIZE, y + 14), fill=jit((84, 84, 90), rng, 6))
        for x in range(4, SIZE, 16):  # centreline dashes
            d.line((x, y + 7, x + 8, y + 7), fill=(230, 230, 230), width=1)
        d.line((50, 50, 50, y), fill=(110, 110, 112), width=4)  # taxiway
        y += 28
    slots = rng.choice(4, size=int(a["planes"]), replace=False)
    for s in sorted(slots):
        _plane(d, 20 + 28 * float(s) + rng.uniform(-3, 3), 29 + rng.uniform(-4, 4))
    return texture(orient(img, str(a["orientation"])), rng, grain=4, mottle=4)


def parking(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = canvas(jit((102, 102, 108), rng, 6))
    rows = int(a["rows"])
    band = SIZE / rows
    p_car = 0.9 if a["fullness"] == "full" else 0.45
    palette = (
        ["red", "blue", "white", "black", "silver", "yellow"]
        if a["cars"] == "colourful"
        else ["white", "white", "silver"]
    )
    for r in range(rows):
        y0 = r * band + (band - 12) / 2
        d.line((0, y0 - 2, SIZE, y0 - 2), fill=(222, 222, 222), width=1)
        for x in range(3, SIZE - 6, 9):
            d.line((x - 1.5, y0, x - 1.5, y0 + 12), fill=(210, 210, 210), width=1)
            if rng.random() < p_car:
                colour = COLOURS[str(rng.choice(palette))]
                d.rectangle((x, y0 + 1, x + 5, y0 + 11), fill=jit(colour, rng, 10))
    return texture(orient(img, str(a["orientation"])), rng, grain=4, mottle=3)


def baseballfield(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = canvas(jit((72, 150, 66), rng, 8))
    if a["n"] == 1:
        radius = 58.0
        homes = [({"left": 44, "centre": 64, "right": 84}[str(a["position"])], 112.0)]
    else:
        radius = 40.0
        homes = [(34.0, 102.0), (94.0, 102.0)]
    for hx, hy in homes:
        hx += rng.uniform(-3, 3)
        box = (hx - radius, hy - radius, hx + radius, hy + radius)
        d.pieslice(box, 225, 315, fill=jit((96, 176, 82), rng, 6))  # outfield
        r2 = radius * 0.58
        d.pieslice((hx - r2, hy - r2, hx + r2, hy + r2), 225, 315, fill=jit((188, 136, 88), rng))
        s = r2 * 0.42
        diamond = [(hx, hy - 3), (hx + s, hy - s - 3), (hx, hy - 2 * s - 3), (hx - s, hy - s - 3)]
        d.polygon(diamond, fill=(92, 166, 78))  # infield grass
        k = radius / math.sqrt(2)
        d.line((hx, hy, hx - k, hy - k), fill=(240, 240, 240), width=1)
        d.line((hx, hy, hx + k, hy - k), fill=(240, 240, 240), width=1)
        if a["stands"]:  # bleachers behind home plate
            d.rectangle((hx - 14, hy + 4, hx + 14, hy + 12), fill=jit((112, 112, 118), rng, 6))
    if a["trees"]:
        for x in np.linspace(4, SIZE - 4, 14):
            r = rng.uniform(3, 5)
            d.ellipse((x - r, 2, x + r, 2 + 2 * r), fill=(40, 96, 44))
    return texture(img, rng, grain=5, mottle=4)


def storagetanks(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    ground = (150, 148, 140) if a["ground"] == "grey" else (150, 118, 86)
    img, d = canvas(jit(ground, rng, 8))
    n = int(a["n"])
    r = rng.uniform(11, 13) if a["size"] == "large" else rng.uniform(6, 7.5)
    step = 2 * r + 5
    if a["arrangement"] == "row":
        cols, nrows = n, 1
    else:
        cols = math.ceil(math.sqrt(n))
        nrows = math.ceil(n / cols)
    x0 = (SIZE - step * (cols - 1)) / 2 + rng.uniform(-4, 4)
    y0 = (SIZE - step * (nrows - 1)) / 2 + rng.uniform(-4, 4)
    for i in range(n):
        cx, cy = x0 + step * (i % cols), y0 + step * (i // cols)
        d.ellipse((cx - r + 3, cy - r + 3, cx + r + 3, cy + r + 3), fill=shade(ground, -50))
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(236, 236, 232), outline=(196, 196, 196))
        d.ellipse((cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5), fill=(180, 180, 180))
    return texture(img, rng, grain=4, mottle=4)


def pond(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    meadow = jit((116, 166, 82), rng, 8)
    img, d = canvas(meadow)
    for x, y in rng.uniform(0, SIZE, (60, 2)):  # tufts of grass
        d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=shade(meadow, -22))
    if a["n"] == 1:
        offsets = {"centre": (0, 0), "left": (-28, 0), "right": (28, 0), "top": (0, -28)}
        dx, dy = offsets.get(str(a["position"]), (0, 28))
        ponds = [(64.0 + dx, 64.0 + dy, 27.0)]
    else:
        ponds = [
            (34.0, 64.0 + rng.uniform(-14, 14), 20.0),
            (94.0, 64.0 + rng.uniform(-14, 14), 20.0),
        ]
    water = jit(COLOURS[str(a["water"])], rng, 8)
    for cx, cy, radius in ponds:
        theta = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        wobble = 1 + 0.14 * np.sin(3 * theta + rng.uniform(0, 6.3)) + rng.uniform(-0.05, 0.05, 40)
        rr = radius * wobble
        xs, ys = cx + rr * np.cos(theta), cy + rr * np.sin(theta)
        poly = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        d.polygon(poly, fill=water, outline=(70, 104, 56))
    return texture(img, rng, grain=5, mottle=4)
