"""The papers gapscope reproduces, in the report's order; a figure says which one it belongs to.

Each shipped :class:`gapscope.experiments.figures.Figure` carries its ``paper`` (one of
:data:`PAPERS`) and its ``number`` there; the report, ``gapscope list`` and the README's list
order experiments by paper, then figure number, then name. A figure without a paper (a user's)
goes to :data:`OTHER_GROUP`, last.
"""

from __future__ import annotations

import re

MIND_THE_GAP = "Mind the Gap"
REVISION = "Mind the Gap, revision"
RECORD_STRAIGHT = "Setting the Record Straight"
GAPSCOPE = "gapscope's additions"
PAPERS = (MIND_THE_GAP, REVISION, RECORD_STRAIGHT, GAPSCOPE)
OTHER_GROUP = "Other experiments"


def order_key(paper: str, number: str, name: str) -> tuple[int, int, str, str]:
    """Where an experiment goes: by paper, then by the figure number's leading integer (the
    letter after it next: 8a before 8b; no number last), then by name."""
    group = PAPERS.index(paper) if paper in PAPERS else len(PAPERS)
    match = re.match(r"\d+", number)
    return group, int(match.group()) if match else 10**6, number, name


def group_of(paper: str) -> str:
    """The report group of a figure's paper ('Other experiments' for none or an unknown one)."""
    return paper if paper in PAPERS else OTHER_GROUP
