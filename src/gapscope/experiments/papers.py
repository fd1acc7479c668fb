"""The shipped experiments grouped by paper, in the papers' order: the order of the report.

Mind the Gap by figure number, its revision's figures, Setting the Record Straight, then
gapscope's own additions; any other experiment (a user's) comes last, by name.
"""

from __future__ import annotations

# The shipped experiments in the papers' order (Mind the Gap by figure
# number, its revision's figures, Record Straight, then gapscope's additions); any other
# experiment (a user's) comes last, by name. The table lives here, beside the page it orders,
# rather than as a key in every TOML file: one list to read and edit, no change to the
# experiment files' hashes, and a test checks that every shipped experiment is in it.
PAPER_ORDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Mind the Gap",
        (
            "eigenvalue_clouds",  # Fig. 1
            "rank_collapse_width",  # Fig. 2
            "rank_collapse_depth",  # Fig. 3 (and revision Fig. 7)
            "gradients_width",  # Fig. 4
            "gradients_depth",  # Fig. 5 (and revision Fig. 8)
            "training_fix",  # Fig. 6
            "attention_outliers",  # Fig. 7
            "training_scaling_kq",  # Fig. 8a
            "training_scaling_skip",  # Fig. 8b
        ),
    ),
    (
        "Mind the Gap, revision",
        (
            "roberta_inputs",  # Figs 1-2
            "tinybert_long",  # Fig. 3
            "gpt2_causal",  # Fig. 4
            "roberta_width",  # Fig. 5
            "roberta_depth",  # Fig. 6
            "noniso_clouds",  # Fig. 9
            "rank_collapse_width_by_depth",  # Figs 10-11
        ),
    ),
    (
        "Setting the Record Straight",
        ("trained_smoothing", "ln_sign", "pretrained_smoothing", "regime_prediction"),  # Figs 2, 3, 4-5; Thms
    ),
    ("gapscope's additions", ("causal_fix", "kq_long_context", "remedies")),
)
OTHER_GROUP = "Other experiments"
_RANK = {name: (g, i) for g, (_, names) in enumerate(PAPER_ORDER) for i, name in enumerate(names)}


def order_key(name: str) -> tuple[int, int, str]:
    """Where an experiment goes in the report: by paper and figure; unknown names last, by name."""
    group, index = _RANK.get(name, (len(PAPER_ORDER), 0))
    return group, index, name


def group_of(name: str) -> str:
    """The report group an experiment belongs to (its paper, or 'Other experiments')."""
    rank = _RANK.get(name)
    return PAPER_ORDER[rank[0]][0] if rank else OTHER_GROUP
