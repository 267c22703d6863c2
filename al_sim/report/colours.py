"""One colour per strategy, the same in every figure: a colour-blind-safe palette of 12.

Paul Tol's "muted" scheme (9 colours, distinct under the common colour-vision deficiencies)
plus three of Okabe and Ito's; black is the reference's (random's) dashed line.
"""

from __future__ import annotations

import zlib

PALETTE = (
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77",  # Tol muted
    "#CC6677", "#882255", "#AA4499",
    "#E69F00", "#0072B2", "#D55E00",  # Okabe-Ito: orange, blue, vermillion
)
# The strategies al_sim ships, each pinned to its own colour (a new one takes the next free).
KNOWN = ("random", "least_confidence", "margin", "entropy", "bald", "power_entropy",
         "power_bald", "coreset", "badge", "typiclust", "cvirs")


def strategy_colour(name: str) -> str:
    """The colour of strategy ``name``: fixed for the known ones; another name gets one of
    the colours no known strategy holds, by a stable hash of the name (never the run order)."""
    if name in KNOWN:
        return PALETTE[KNOWN.index(name)]
    spare = PALETTE[len(KNOWN):] or PALETTE
    return spare[zlib.crc32(name.encode()) % len(spare)]


def strategy_colours(names: list[str]) -> dict[str, str]:
    """A colour per name, distinct within ``names`` while the palette lasts: a hashed name
    whose colour is taken moves to the next one free."""
    out: dict[str, str] = {n: strategy_colour(n) for n in names if n in KNOWN}
    for name in sorted(set(names) - set(out)):
        colour = strategy_colour(name)
        if colour in out.values() and len(out) < len(PALETTE):
            start = PALETTE.index(colour)
            colour = next(PALETTE[(start + k) % len(PALETTE)] for k in range(len(PALETTE))
                          if PALETTE[(start + k) % len(PALETTE)] not in out.values())
        out[name] = colour
    return out
