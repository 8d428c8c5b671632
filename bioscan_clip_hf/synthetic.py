"""The embedded synthetic BIOSCAN-like data set: drawn insects and evolved DNA barcodes.

Everything derives from one seed, with no download:

* a taxonomy tree (orders -> families -> genera -> species) with invented Latin-like names below
  the order (order names are real, to match their drawn body plans);
* DNA barcodes evolved down the tree from a COI-like, AT-rich root: a mutation rate per rank,
  third codon positions fastest, lengths 500-700 nt, occasional ``N``;
* drawn insects whose body plan comes from the order, the palette from the family, the marking
  pattern from the genus and finer variation (mark count and size, proportions, hue) from the
  species, with per-specimen pose, scale, lighting, background and colour noise; stored like
  BIOSCAN's ``cropped_256`` JPEGs (shorter side 256).

Splits follow BIOSCAN-5M and the paper's rules (``bioscan_clip_hf.data.splits``): labelled
species split into seen/unseen; ``pretrain`` holds records without species labels (some without a
genus) from seen species and from species that exist only there; ``other_heldout`` holds a few
labelled species that are used nowhere else. ``layout="bioscan1m"`` keeps the seen-species keys in
a ``key_seen`` split of their own, as a BIOSCAN-1M (CLIBD partitioning) build does; the records are
the same in both layouts.

Example:
    >>> from bioscan_clip_hf.synthetic import generate_synthetic_dataset
    >>> folder = generate_synthetic_dataset("demo_data", size="tiny", seed=0)  # doctest: +SKIP

Command line: ``python -m bioscan_clip_hf.synthetic --out DIR --size demo|tiny --seed 0 [--layout bioscan1m]``.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from .data.build import run_build
from .data.report import BuildReport
from .data.schema import empty_record
from .data.splits import assign_paper_splits


@dataclass(frozen=True)
class SyntheticSize:
    """Shape of a generated data set."""

    orders: int
    families_per_order: int
    genera_per_family: int
    species_per_genus: tuple[int, int]  # inclusive range
    records_per_species: tuple[int, int, float]  # min, max, mean of a clipped geometric-like law
    pretrain_records: int
    pretrain_only_species: int
    heldout_species: int


LAYOUTS: dict[str, str] = {"bioscan5m": "train", "bioscan1m": "key_seen"}
"""Split layouts -> the split that holds the seen-species keys (``data.schema.key_splits``)."""

SIZES: dict[str, SyntheticSize] = {
    "tiny": SyntheticSize(3, 2, 2, (3, 3), (3, 9, 5.0), 40, 3, 2),
    "demo": SyntheticSize(6, 3, 3, (2, 4), (3, 60, 17.0), 1000, 30, 6),
}
"""``tiny``: ~230 records for tests; ``demo``: ~4,000 records, ~160 species, for the demo."""

ROOT_LENGTH = 720
BARCODE_LENGTH = 658
RANK_RATES = {"order": 0.10, "family": 0.08, "genus": 0.06, "species": 0.035, "specimen": 0.003}
"""Substitutions per site on the branch leading to each rank (before codon-position weighting)."""
CODON_WEIGHTS = np.array([0.5, 0.25, 2.25])
"""Relative rates of codon positions 1, 2, 3 (mean 1): third positions evolve fastest, as in COI."""
AT_BIAS = np.array([0.36, 0.14, 0.14, 0.36])  # A, C, G, T: insect COI is AT-rich
BASES = np.array(list("ACGT"))

# Body plans, in the order they are used; ``tiny`` takes the first three (the most distinct).
ORDER_PLANS = ("Coleoptera", "Lepidoptera", "Diptera", "Hymenoptera", "Hemiptera", "Orthoptera")
PATTERNS = ("bands", "spots", "stripe", "eyespots", "margin", "chevrons")

_SYLLABLES = (
    "ba", "ca", "da", "fe", "ga", "hi", "la", "me", "no", "pa", "ra", "si", "ta", "vo", "xe", "zu",
    "bro", "cle", "dri", "fla", "glo", "pla", "stre", "tri", "cor", "mar", "pel", "tor", "vin", "lys",
)


# ----------------------------------------------------------------------------------------------
# taxonomy tree


@dataclass
class Taxon:
    """A node of the generated tree with what it passes on to its descendants."""

    rank: str
    name: str
    parent: Taxon | None
    dna: np.ndarray  # uint8 codes 0..3, aligned, length ROOT_LENGTH
    look: dict[str, Any] = field(default_factory=dict)
    children: list[Taxon] = field(default_factory=list)

    def lineage(self) -> dict[str, str]:
        node: Taxon | None = self
        names: dict[str, str] = {}
        while node is not None:
            names[node.rank] = node.name
            node = node.parent
        return names


def _word(rng: np.random.Generator, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables))


def _unique(rng: np.random.Generator, used: set[str], make) -> str:
    while True:
        name = make(rng)
        if name not in used:
            used.add(name)
            return name


def _mutate(dna: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Substitute sites with probability ``rate`` x codon-position weight; 2/3 are transitions."""
    weights = CODON_WEIGHTS[np.arange(dna.size) % 3]
    hit = rng.random(dna.size) < np.clip(rate * weights, 0, 0.75)
    out = dna.copy()
    n = int(hit.sum())
    transition = rng.random(n) < 2 / 3
    # A(0)<->G(2), C(1)<->T(3) are transitions; transversions draw an AT-biased base.
    partner = np.array([2, 3, 0, 1], dtype=np.uint8)[dna[hit]]
    drawn = rng.choice(4, size=n, p=AT_BIAS).astype(np.uint8)
    out[hit] = np.where(transition, partner, drawn)
    return out


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255)


def build_tree(size: SyntheticSize, rng: np.random.Generator) -> list[Taxon]:
    """Generate the tree; return its orders. Species get DNA and looks; see the module docstring."""
    if size.orders > len(ORDER_PLANS):
        raise ValueError(f"at most {len(ORDER_PLANS)} orders are supported, got {size.orders}")
    root = rng.choice(4, size=ROOT_LENGTH, p=AT_BIAS).astype(np.uint8)
    used: set[str] = set()
    orders = []
    for o in range(size.orders):
        plan = ORDER_PLANS[o]
        order = Taxon("order", plan, None, _mutate(root, RANK_RATES["order"], rng), {"plan": plan})
        orders.append(order)
        hue0 = rng.random()
        for f in range(size.families_per_order):
            hue = hue0 + f / size.families_per_order + rng.uniform(-0.04, 0.04)
            family = Taxon(
                "family",
                _unique(rng, used, lambda r: _word(r, 2).capitalize() + "idae"),
                order,
                _mutate(order.dna, RANK_RATES["family"], rng),
                {
                    "hue": hue,
                    "body": (rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.7)),
                    "wing": (hue + rng.uniform(-0.08, 0.08), rng.uniform(0.35, 0.75), rng.uniform(0.6, 0.92)),
                },
            )
            order.children.append(family)
            patterns = rng.permutation(PATTERNS)
            for g in range(size.genera_per_family):
                dark = rng.random() < 0.35
                genus = Taxon(
                    "genus",
                    _unique(rng, used, lambda r: _word(r, 3).capitalize()),
                    family,
                    _mutate(family.dna, RANK_RATES["genus"], rng),
                    {
                        "pattern": str(patterns[g % len(patterns)]),
                        "mark": _hsv(hue + 0.5 + rng.uniform(-0.2, 0.2), rng.uniform(0.6, 1.0),
                                     rng.uniform(0.08, 0.2) if dark else rng.uniform(0.85, 1.0)),
                        "count": int(rng.integers(2, 4)),
                    },
                )
                family.children.append(genus)
                for _ in range(int(rng.integers(size.species_per_genus[0], size.species_per_genus[1] + 1))):
                    _add_species(genus, rng, used)
    return orders


def _add_species(genus: Taxon, rng: np.random.Generator, used: set[str]) -> Taxon:
    species = Taxon(
        "species",
        genus.name + " " + _unique(rng, used, lambda r: _word(r, 2) + str(r.choice(["a", "us", "is", "ae"]))),
        genus,
        _mutate(genus.dna, RANK_RATES["species"], rng),
        {
            "hue_shift": rng.uniform(-0.03, 0.03),
            "count": genus.look["count"] + int(rng.integers(-1, 2)),
            "mark_scale": rng.uniform(0.75, 1.3),
            "elongation": rng.uniform(0.9, 1.1),
            "antenna": rng.uniform(0.75, 1.3),
            "mark_offset": rng.uniform(-0.12, 0.12),
        },
    )
    genus.children.append(species)
    return species


def _all(nodes: Sequence[Taxon], rank: str) -> list[Taxon]:
    out: list[Taxon] = []
    for node in nodes:
        out.extend([node] if node.rank == rank else _all(node.children, rank))
    return out


# ----------------------------------------------------------------------------------------------
# DNA


def specimen_barcode(species: Taxon, rng: np.random.Generator) -> str:
    """One specimen's barcode: mutated from its species, trimmed like real reads, sometimes ``N``."""
    dna = _mutate(species.dna, RANK_RATES["specimen"], rng)
    # Most reads cover the standard 658-nt Folmer region from its first base, as in BIOSCAN.
    start = 0 if rng.random() < 0.95 else int(rng.integers(1, 7))
    length = BARCODE_LENGTH if rng.random() < 0.75 else int(rng.integers(500, 701))
    length = min(length, ROOT_LENGTH - start)
    chars = BASES[dna[start : start + length]]
    if rng.random() < 0.08:
        chars[rng.integers(0, length, size=int(rng.integers(1, 5)))] = "N"
    if rng.random() < 0.03:
        run = int(rng.integers(5, 21))
        if rng.random() < 0.5:
            chars[:run] = "N"
        else:
            chars[-run:] = "N"
    return "".join(chars)


# ----------------------------------------------------------------------------------------------
# images: shapes are built in a local frame (body length 1, head towards -y), then posed.


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _body_plan(plan: str, elongation: float, antenna: float) -> tuple[list, list, list, list]:
    """(legs, wings_under, body, wings_over) shape lists and pattern regions for a body plan.

    Shapes are ``(kind, points, role)`` with role in body/wing/clear_wing/dark/eye; regions are
    ``(cx, cy, rx, ry, angle)`` ellipses the genus pattern is drawn into (mirrored pairs).
    """
    e = elongation
    E = _ellipse
    legs: list = []
    under: list = []
    body: list = []
    regions: list = []

    def leg_pairs(y0: float, spread: float, length: float, width: str = "leg") -> None:
        for dy, dx, back in ((-0.08, 1.0, -0.18), (0.0, 1.15, 0.02), (0.08, 1.0, 0.22)):
            for side in (-1, 1):
                knee = (side * spread * dx, y0 + dy + back * 0.5)
                foot = (side * (spread * dx + length * 0.55), y0 + dy + back + length * 0.2 * np.sign(back + 1e-9))
                legs.append(("line", np.array([(0.0, y0 + dy), knee, foot]), width))

    def antennae(y0: float, length: float, spread: float = 0.6) -> None:
        for side in (-1, 1):
            legs.append(("line", np.array([(side * 0.02, y0), (side * length * spread * 0.5, y0 - length * 0.6),
                                           (side * length * spread, y0 - length)]), "antenna"))

    if plan == "Coleoptera":
        leg_pairs(-0.05, 0.16, 0.2)
        antennae(-0.45, 0.18 * antenna)
        body += [("poly", E(0, -0.42 * e, 0.08, 0.06), "dark"), ("poly", E(0, -0.29 * e, 0.16, 0.09), "body")]
        for side in (-1, 1):
            body.append(("poly", E(side * 0.083, 0.07 * e, 0.088, 0.3 * e), "body"))
            regions.append((side * 0.083, 0.07 * e, 0.075, 0.27 * e, 0.0))
        body.append(("poly", E(-0.05, -0.05, 0.03, 0.12), "shine"))
    elif plan == "Lepidoptera":
        leg_pairs(-0.12, 0.06, 0.08)
        antennae(-0.33, 0.3 * antenna, 0.5)
        for side in (-1, 1):
            under.append(("poly", E(side * 0.2, 0.12 * e, 0.2, 0.16, side * 0.3), "wing"))
            under.append(("poly", np.array([(side * 0.04, -0.2), (side * 0.56, -0.1), (side * 0.5, 0.06),
                                            (side * 0.3, 0.16), (side * 0.04, 0.04)]), "wing"))
            regions.append((side * 0.3, -0.03, 0.16, 0.1, side * 0.2))
        body += [("poly", E(0, 0.1 * e, 0.05, 0.22 * e), "body"), ("poly", E(0, -0.16 * e, 0.065, 0.1), "body"),
                 ("poly", E(0, -0.29 * e, 0.05, 0.045), "dark")]
    elif plan == "Diptera":
        leg_pairs(-0.12, 0.12, 0.2)
        antennae(-0.4, 0.06 * antenna)
        body += [("poly", E(0, 0.09 * e, 0.115, 0.18 * e), "body"), ("poly", E(0, -0.17 * e, 0.12, 0.11), "body"),
                 ("poly", E(0, -0.33 * e, 0.1, 0.075), "dark")]
        for side in (-1, 1):
            body.append(("poly", E(side * 0.065, -0.34 * e, 0.05, 0.055), "eye"))
            under.append(("poly", E(side * 0.2, 0.04 * e, 0.085, 0.28 * e, side * -0.45), "clear_wing"))
        regions.append((0.0, 0.09 * e, 0.1, 0.16 * e, 0.0))
    elif plan == "Hymenoptera":
        leg_pairs(-0.18, 0.1, 0.26)
        antennae(-0.43, 0.24 * antenna, 0.8)
        body += [("poly", E(0, 0.19 * e, 0.1, 0.22 * e), "body"), ("poly", E(0, -0.06 * e, 0.022, 0.06), "dark"),
                 ("poly", E(0, -0.22 * e, 0.08, 0.1), "body"), ("poly", E(0, -0.38 * e, 0.075, 0.06), "dark")]
        for side in (-1, 1):
            under.append(("poly", E(side * 0.19, -0.06 * e, 0.06, 0.25 * e, side * -0.6), "clear_wing"))
            under.append(("poly", E(side * 0.14, 0.04 * e, 0.045, 0.16 * e, side * -0.5), "clear_wing"))
        regions.append((0.0, 0.2 * e, 0.085, 0.19 * e, 0.0))
    elif plan == "Hemiptera":
        leg_pairs(-0.08, 0.15, 0.22)
        antennae(-0.42, 0.26 * antenna, 0.9)
        body += [("poly", E(0, 0.08 * e, 0.19, 0.3 * e), "wing"), ("poly", E(0, 0.3 * e, 0.13, 0.09), "dark"),
                 ("poly", np.array([(-0.08, -0.34 * e), (0.08, -0.34 * e), (0.2, -0.17 * e), (-0.2, -0.17 * e)]), "body"),
                 ("poly", np.array([(-0.11, -0.17 * e), (0.11, -0.17 * e), (0, 0.06 * e)]), "body"),
                 ("poly", E(0, -0.39 * e, 0.06, 0.05), "dark")]
        for side in (-1, 1):
            regions.append((side * 0.11, 0.1 * e, 0.065, 0.16 * e, 0.0))
    elif plan == "Orthoptera":
        antennae(-0.44, 0.55 * antenna, 0.35)
        leg_pairs(-0.18, 0.08, 0.12)
        for side in (-1, 1):
            legs.append(("line", np.array([(side * 0.05, -0.02), (side * 0.2, 0.22 * e), (side * 0.1, 0.5 * e)]), "hindleg"))
        body += [("poly", E(0, 0.1 * e, 0.075, 0.3 * e), "body"), ("poly", E(0, -0.25 * e, 0.09, 0.09), "body"),
                 ("poly", E(0, -0.38 * e, 0.07, 0.07), "dark")]
        for side in (-1, 1):
            body.append(("poly", E(side * 0.045, 0.06 * e, 0.05, 0.34 * e), "wing"))
            regions.append((side * 0.045, 0.06 * e, 0.04, 0.3 * e, 0.0))
    else:
        raise ValueError(f"unknown body plan {plan!r}")
    return legs, under, body, regions


def _pattern_shapes(pattern: str, regions: list, count: int, scale: float, offset: float) -> list:
    """Marking polygons (``mark`` role, or ``dark`` for eyespot pupils) inside the regions."""
    shapes = []
    count = max(count, 1)
    for cx, cy, rx, ry, angle in regions:
        c, s = math.cos(angle), math.sin(angle)

        def place(u: float, v: float) -> tuple[float, float]:
            x, y = u * rx, v * ry
            return cx + c * x - s * y, cy + s * x + c * y

        if pattern == "bands":
            for k in range(count):
                v = -0.7 + 1.4 * (k + 0.5) / count + offset
                half = math.sqrt(max(1 - v * v, 0.05))
                x0, y0 = place(0, v)
                shapes.append(("poly", _ellipse(x0, y0, rx * half, ry * 0.13 * scale, angle), "mark"))
        elif pattern == "spots":
            for k in range(count):
                v = -0.6 + 1.2 * (k + 0.5) / count + offset
                u = 0.35 * (-1) ** k
                x0, y0 = place(u, v)
                r = min(rx, ry) * 0.36 * scale
                shapes.append(("poly", _ellipse(x0, y0, r, r), "mark"))
        elif pattern == "stripe":
            x0, y0 = place(0, offset)
            shapes.append(("poly", _ellipse(x0, y0, rx * 0.3 * scale, ry * 0.9, angle), "mark"))
        elif pattern == "eyespots":
            for k in range(min(count, 2)):
                v = (-0.35 + 0.7 * k if count > 1 else 0.0) + offset
                x0, y0 = place(0, v)
                r = min(rx, ry) * 0.45 * scale
                shapes.append(("poly", _ellipse(x0, y0, r, r), "mark"))
                shapes.append(("poly", _ellipse(x0, y0, r * 0.45, r * 0.45), "dark"))
        elif pattern == "margin":
            shapes.append(("ring", _ellipse(cx, cy, rx * 0.95, ry * 0.95, angle), "mark"))
        elif pattern == "chevrons":
            for k in range(count):
                v = -0.6 + 1.2 * (k + 0.5) / count + offset
                shapes.append(("line", np.array([place(-0.8, v - 0.25), place(0, v + 0.1), place(0.8, v - 0.25)]),
                               "chevron"))
    return shapes


def draw_specimen(species: Taxon, rng: np.random.Generator) -> Image.Image:
    """Draw one specimen of ``species`` with random pose, scale, lighting and background."""
    genus, family, order = species.parent, species.parent.parent, species.parent.parent.parent
    look_s, look_g, look_f = species.look, genus.look, family.look
    hue = look_f["hue"] + look_s["hue_shift"]
    jitter = rng.uniform(-0.04, 0.04, size=3)
    colours = {
        "body": _hsv(hue + jitter[0] * 0.3, look_f["body"][0], look_f["body"][1] + jitter[1]),
        "wing": _hsv(look_f["wing"][0] + look_s["hue_shift"], look_f["wing"][1], look_f["wing"][2] + jitter[2]),
        "mark": look_g["mark"],
        "dark": (28, 22, 20),
        "eye": (120, 20, 18),
    }
    legs, under, body, regions = _body_plan(order.look["plan"], look_s["elongation"], look_s["antenna"])
    marks = _pattern_shapes(look_g["pattern"], regions, look_s["count"], look_s["mark_scale"], look_s["mark_offset"])

    width = int(rng.integers(256, 353)) if rng.random() < 0.7 else 256
    height = 256
    if rng.random() < 0.5:
        width, height = height, width
    grey = rng.uniform(185, 238)
    tint = rng.uniform(-8, 8, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gradient = (rng.uniform(-0.12, 0.12) * (xx / width - 0.5) + rng.uniform(-0.12, 0.12) * (yy / height - 0.5))
    background = (grey + tint)[None, None, :] * (1 + gradient[..., None])
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas, "RGBA")

    scale = 180 * rng.uniform(0.8, 1.05)
    angle = rng.uniform(0, 2 * np.pi)
    centre = np.array([width / 2, height / 2]) + rng.uniform(-0.08, 0.08, size=2) * np.array([width, height])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    flip = -1 if rng.random() < 0.5 else 1  # mirror image = specimen lying the other way up

    def pose(points: np.ndarray) -> list[tuple[float, float]]:
        p = points * np.array([flip, 1.0]) * scale @ rot.T + centre
        return [tuple(q) for q in p]

    line_widths = {"leg": max(2, scale / 60), "antenna": max(1, scale / 90), "hindleg": scale / 25,
                   "chevron": scale / 40}
    for _, points, role in legs:
        draw.line(pose(points), fill=colours["dark"], width=int(line_widths[role]), joint="curve")
    for _, points, role in under + body:
        if role == "clear_wing":
            r, g, b = colours["wing"]
            draw.polygon(pose(points), fill=(r, g, b, 105), outline=(60, 60, 60, 160))
        elif role == "shine":
            draw.polygon(pose(points), fill=(255, 255, 255, 70))
        else:
            draw.polygon(pose(points), fill=colours[role])
    for kind, points, role in marks:
        if kind == "ring":
            draw.line(pose(np.vstack([points, points[:1]])), fill=colours["mark"], width=int(scale / 30))
        elif kind == "line":
            draw.line(pose(points), fill=colours["mark"], width=int(line_widths[role]), joint="curve")
        else:
            draw.polygon(pose(points), fill=colours[role])

    pixels = np.asarray(canvas, dtype=np.float32)
    gain = rng.uniform(0.85, 1.12)
    noise = rng.normal(0, rng.uniform(2, 7), size=(height // 4 + 1, width // 4 + 1, 1)).astype(np.float32)
    noise = np.repeat(np.repeat(noise, 4, axis=0), 4, axis=1)[:height, :width]
    pixels = np.clip(pixels * gain + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if rng.random() < 0.4:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
    return image


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# records


def _records_per_species(size: SyntheticSize, rng: np.random.Generator) -> int:
    low, high, mean = size.records_per_species
    # A long-tailed count (like real species abundances), clipped to [low, high].
    return int(np.clip(low + rng.geometric(1 / max(mean - low + 1, 1.0)) - 1, low, high))


def generate_synthetic_records(
    size: str = "demo", seed: int = 0, progress: bool = True, layout: str = "bioscan5m"
) -> list[dict[str, Any]]:
    """Generate the records (schema columns, image as JPEG bytes) without writing anything.

    ``layout``: ``bioscan5m`` (seen-species keys in ``train``) or ``bioscan1m`` (in ``key_seen``).

    Example:
        >>> records = generate_synthetic_records("tiny", seed=0, progress=False)  # doctest: +SKIP
        >>> sorted({r["split"] for r in records})                               # doctest: +SKIP
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    orders = build_tree(spec, rng)
    labelled_species = _all(orders, "species")
    genera = _all(orders, "genus")
    used = {t.name.split()[-1] for t in labelled_species} | {t.name for t in genera}
    # Species never labelled (only in pretrain) and species held out (other_heldout) join existing genera.
    extra = [_add_species(genera[int(rng.integers(len(genera)))], rng, used)
             for _ in range(spec.pretrain_only_species + spec.heldout_species)]
    pretrain_only, heldout = extra[: spec.pretrain_only_species], extra[spec.pretrain_only_species :]

    plan: list[tuple[Taxon, str | None, int]] = []  # (species, split or None = decided later, label level)
    for species in labelled_species:
        plan += [(species, None, 4)] * _records_per_species(spec, rng)
    splits = assign_paper_splits([s.name for s, _, _ in plan], seed=seed, seen_keys_split=LAYOUTS[layout])
    plan = [(s, split, level) for (s, _, level), split in zip(plan, splits)]
    seen = sorted({s.name for s, split, _ in plan if split in ("train", "val", "test")})
    seen_species = [s for s in labelled_species if s.name in set(seen)]
    for _ in range(spec.pretrain_records):
        pool = pretrain_only if (pretrain_only and rng.random() < 0.3) else seen_species
        # Labelled to family (25 %) or genus (75 %): BIOSCAN-5M pretrain records have no species.
        plan.append((pool[int(rng.integers(len(pool)))], "pretrain", 3 if rng.random() < 0.75 else 2))
    for species in heldout:
        plan += [(species, "other_heldout", 4)] * _records_per_species(spec, rng)

    # Records in random order, as in a real release: a streamed shuffle buffer then mixes species.
    plan = [plan[i] for i in rng.permutation(len(plan))]
    bins = {s.name: f"BOLD:SYN{i:04d}" for i, s in enumerate(labelled_species + extra)}
    records = []
    for index, (species, split, level) in enumerate(tqdm(plan, desc=f"synthetic {size}", unit="rec",
                                                          disable=not progress)):
        record_rng = np.random.default_rng([seed, index])
        lineage = species.lineage()
        record = empty_record()
        processid = f"SYN{index:06d}-{seed % 100:02d}"
        record.update(
            processid=processid,
            sampleid=f"SYN-S{index:06d}",
            dna_barcode=specimen_barcode(species, record_rng),
            dna_bin=bins[species.name],
            phylum="Arthropoda",
            **{"class": "Insecta"},
            order=lineage["order"],
            family=lineage["family"] if level >= 2 else None,
            genus=lineage["genus"] if level >= 3 else None,
            species=lineage["species"] if level >= 4 else None,
            split=split,
        )
        image = draw_specimen(species, record_rng)
        record["image"] = {"bytes": _jpeg(image, int(record_rng.integers(82, 96))), "path": f"{processid}.jpg"}
        records.append(record)
    return records


def generate_synthetic_dataset(out_dir: str | Path, size: str = "demo", seed: int = 0, layout: str = "bioscan5m") -> Path:
    """Generate the synthetic set and write it as a BIOSCAN Parquet folder; return the folder.

    ``layout``: where the seen-species keys go (``bioscan5m``: ``train``; ``bioscan1m``: ``key_seen``).

    The folder has ``data/{split}-00000-of-00001.parquet``, ``build_report.json`` and a dataset
    card labelled synthetic. ``load_bioscan(folder, split=...)`` reads it.

    Example:
        >>> from bioscan_clip_hf.data import load_bioscan
        >>> ds = load_bioscan(generate_synthetic_dataset("demo_data", "tiny"), split="train")  # doctest: +SKIP
    """
    records = generate_synthetic_records(size, seed, layout=layout)
    by_split: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_split.setdefault(record["split"], []).append(record)
    # The default layout is not recorded, so folders built before layouts existed still resume.
    extra = {} if layout == "bioscan5m" else {"layout": layout}
    report = BuildReport("synthetic", parameters={"size": size, "seed": seed, **extra})
    option = "" if layout == "bioscan5m" else f" --layout {layout}"
    return run_build(
        by_split, out_dir, report, verify_images=False, shard_size=max(len(records), 1),
        card={"source": "synthetic", "seed": seed,
              "provenance": f"`python -m bioscan_clip_hf.synthetic --out DIR --size {size} --seed {seed}{option}`"},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``python -m bioscan_clip_hf.synthetic``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bioscan_clip_hf.synthetic",
        description="Generate the synthetic BIOSCAN-like data set (drawn insects, evolved barcodes) as Parquet.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--size", default="demo", choices=sorted(SIZES), help="tiny (tests) or demo")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the output is a function of it)")
    parser.add_argument("--layout", default="bioscan5m", choices=sorted(LAYOUTS),
                        help="bioscan5m (default): seen-species keys in train; bioscan1m: in key_seen")
    args = parser.parse_args(argv)
    folder = generate_synthetic_dataset(args.out, size=args.size, seed=args.seed, layout=args.layout)
    counts = json.loads((folder / "build_report.json").read_text())["counts"]
    print(f"wrote {sum(counts.values())} synthetic records to {folder}: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
