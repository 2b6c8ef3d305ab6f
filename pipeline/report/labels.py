"""Names for actions and reward components, from the episode's ``action_mapping`` and ``reward_mapping``."""

from __future__ import annotations

import math
from dataclasses import dataclass


def number(value: float | None) -> str:
    """A number as people read it: integers without a decimal point, others to 4 decimals; '-' for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{round(value, 4):.12g}"


@dataclass(frozen=True)
class Labels:
    """Action labels of one kind of subject: agents use ``action_mapping``, units its ``unit_mapping``."""

    mapping: dict[int, str]

    def action(self, value: float) -> str:
        """``"Fire main engine (2)"`` for a mapped action, else the number itself."""
        if value == value and value == int(value) and int(value) in self.mapping:
            return f"{self.mapping[int(value)]} ({int(value)})"
        return number(value)

    def distribution(self, width: int) -> list[str]:
        """Names of the entries of an action distribution: entry i is the probability of action i."""
        return [self.action(float(i)) for i in range(width)]
