"""Each strategy keeps its colour across figures; colours are distinct (issue 27)."""

from __future__ import annotations

from al_sim.report.colours import KNOWN, PALETTE, strategy_colour, strategy_colours


def test_a_strategy_has_the_same_colour_whatever_else_is_plotted() -> None:
    alone = strategy_colours(["entropy"])
    beside = strategy_colours(["bald", "entropy", "margin", "my_strategy"])
    assert alone["entropy"] == beside["entropy"] == strategy_colour("entropy")
    assert strategy_colours(["my_strategy", "zeta"])["my_strategy"] == \
        strategy_colours(["my_strategy"])["my_strategy"] == strategy_colour("my_strategy")


def test_twelve_strategies_get_twelve_distinct_colours() -> None:
    names = [*KNOWN, "custom_a"]
    colours = strategy_colours(names)
    assert len(set(colours.values())) == len(names) == len(PALETTE)
    assert len(set(map(strategy_colour, KNOWN))) == len(KNOWN)


def test_unknown_names_that_hash_alike_are_moved_apart() -> None:
    names = [f"user_{k}" for k in range(len(PALETTE) - len(KNOWN) + 1)]  # more than the spares
    colours = strategy_colours(names)
    assert len(set(colours.values())) == len(names)
    assert all(c in PALETTE for c in colours.values())
