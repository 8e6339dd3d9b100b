"""Capped exponential backoff with jitter: the one retry schedule (streams, ingest, webhooks, MQTT)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Waits that double from ``initial`` up to ``maximum`` seconds; ``jitter`` spreads each wait by up to
    that fraction (so many cameras or nodes that failed together do not retry in lockstep). :meth:`reset`
    after a success.

    >>> b = Backoff(0.5, 4.0, jitter=0.0)
    >>> [b.next() for _ in range(5)]
    [0.5, 1.0, 2.0, 4.0, 4.0]
    """

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.1
    factor: float = 2.0
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial}, {self.maximum}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")

    @property
    def current(self) -> float:
        """The wait the next call to :meth:`next` is based on (before jitter)."""
        return min(self.maximum, self.initial * self.factor ** max(0, self.attempts))

    def next(self) -> float:
        """The next wait in seconds (counts an attempt)."""
        base = self.current
        self.attempts += 1
        if self.jitter:
            base *= 1 + self.jitter * (2 * self._rng.random() - 1)
        return max(0.0, min(self.maximum * (1 + self.jitter), base))

    def reset(self) -> None:
        self.attempts = 0
