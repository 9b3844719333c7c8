"""Training types (SPEC.md section 2): what is trained, which mask, and the Min* loss term.

Plain data with no Keras import, so the run configuration and the plotter can read it without loading a backend.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingType:
    """One row of SPEC.md's training-type table, or one of the field's rival methods on the same weights.

    `mask_types` lists the mask types that make sense, the default first. Baseline trains the weights
    and has no mask; it accepts only `mask` so the original directory layout still holds, and builds
    layers without scores. `score_initializer` names the method's own draw of the initial scores
    (`initializers.SCORE_DRAWS`); the frozen weights are the same draw for every type.
    """
    name: str
    trains_weights: bool
    mask_types: tuple[str, ...]
    rewards_unchanged: bool
    changed_means: str  # what a "changed" weight is: "pruned", "flipped", "pruned and flipped" or "none"
    score_initializer: str = "scores"
    default_keep: float | None = None  # EdgePopup's kept fraction K when --keep is not given; None: keeps no fixed K

    def resolve_mask_type(self, mask_type: str | None) -> str:
        """The mask type to use: the default when None; a ValueError when it makes no sense here."""
        if mask_type is None:
            return self.mask_types[0]
        if mask_type not in self.mask_types:
            raise ValueError(f"--masktype {mask_type} does not fit --traintype {self.name}; "
                             f"use {' or '.join(self.mask_types)}")
        return mask_type

    def layer_mask_type(self, mask_type: str) -> str | None:
        """The mask type the layers are built with (None: plain trainable weights)."""
        return None if self.trains_weights else mask_type

    def resolve_keep(self, keep: float | None) -> float | None:
        """The fraction kept: the default when None; a ValueError for a type that keeps no fixed fraction."""
        if self.default_keep is None:
            if keep is not None:
                raise ValueError(f"--keep is only for EdgePopup, not --traintype {self.name}")
            return None
        return self.default_keep if keep is None else keep

    def layer_options(self, mask_type: str, keep: float | None) -> dict:
        """What `networks.build` needs from the training type to build its masked layers."""
        return dict(mask_type=self.layer_mask_type(mask_type), rewards_unchanged=self.rewards_unchanged,
                    score_initializer=self.score_initializer, keep=keep)


TRAINING_TYPES: dict[str, TrainingType] = {
    "Baseline": TrainingType("Baseline", True, ("mask",), False, "none"),
    "FreePruning": TrainingType("FreePruning", False, ("mask", "mask_rs"), False, "pruned"),
    "MinPruning": TrainingType("MinPruning", False, ("mask", "mask_rs"), True, "pruned"),
    "SignFlipping": TrainingType("SignFlipping", False, ("flip",), False, "flipped"),
    "MinFlipping": TrainingType("MinFlipping", False, ("flip",), True, "flipped"),
    # The field's rivals (README, "Against the field"): each with its own mask function and score draw.
    "EdgePopup": TrainingType("EdgePopup", False, ("topk",), False, "pruned", "kaiming_uniform", default_keep=0.5),
    "Supermask": TrainingType("Supermask", False, ("bernoulli",), False, "pruned", "zero"),
    "SignedSupermask": TrainingType("SignedSupermask", False, ("signed",), False, "pruned and flipped",
                                    "glorot_uniform"),
}

ALIASES: dict[str, str] = {"FreeFlipping": "SignFlipping"}


def get(name: str) -> TrainingType:
    """The training type named `name` (aliases accepted); a ValueError lists the valid names."""
    canonical = ALIASES.get(name, name)
    if canonical not in TRAINING_TYPES:
        raise ValueError(f"unknown training type {name!r}; choose one of {', '.join(names())}")
    return TRAINING_TYPES[canonical]


def names() -> list[str]:
    """Every accepted name, aliases included (argparse choices)."""
    return list(TRAINING_TYPES) + list(ALIASES)
