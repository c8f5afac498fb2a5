"""Energy per inference: the one computation behind every J/inference edgekit shows
(`/edgekit/status` "energy", `/metrics` `edgekit_*_energy_joules_per_inference`,
`edgekit bench --json`, the thermal controller's status, the monitor and the power cap).

There used to be two: the router divided a node's latest power reading by its request rate
over 30 s, and the thermal controller integrated power over time and divided by the requests
completed in the same 30 s. The integrated one is kept because it is the better-founded:
energy is power integrated over the very interval the requests were counted in, so a power
that changed inside the window (a burst, a node heating up, a drain) counts for as long as it
lasted, instead of the last second's reading standing for the whole window; and requests are
counted as completed, not as a rate smoothed over a different span.

Pure (no clock of its own, no I/O): the router feeds it the controller's power reports and
its own completion counts, with the router's clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

#: a gap between two power reports longer than this is not integrated: the node's telemetry
#: was stale, so its power in between is unknown (holding the last value for minutes would
#: invent energy)
MAX_GAP_S = 10.0


@dataclass
class EnergyMeter:
    """Integrated energy (J) and energy per completed request over a sliding window."""

    window_s: float = 30.0
    energy_j: float = 0.0  # since the meter started, over the intervals with power reports
    _last_power_t: float | None = field(default=None, init=False, repr=False)
    #: (time, energy_j, completed requests) at each mark, oldest first
    _marks: deque[tuple[float, float, int]] = field(default_factory=deque, init=False,
                                                     repr=False)

    def add_power(self, now: float, watts: float) -> None:
        """Integrate `watts` over the time since the previous report. A reading describes the
        interval that just ended (an estimate is made from the utilisation over it), so it is
        multiplied by that interval (right-hand sum)."""
        last, self._last_power_t = self._last_power_t, now
        if last is not None and 0 < now - last <= MAX_GAP_S:
            self.energy_j += max(0.0, watts) * (now - last)

    def mark(self, now: float, completed_total: int, energy_j: float | None = None) -> None:
        """Record (now, energy so far, requests completed so far). `energy_j` overrides this
        meter's own figure (a cluster meter marks the sum of its nodes' energies)."""
        self._marks.append((now, self.energy_j if energy_j is None else energy_j,
                            completed_total))
        self._trim(now)

    def j_per_inference(self, now: float) -> float | None:
        """Energy over the window / requests completed in it; None without power or traffic."""
        self._trim(now)
        if len(self._marks) < 2:
            return None
        (_, e0, c0), (_, e1, c1) = self._marks[0], self._marks[-1]
        return round((e1 - e0) / (c1 - c0), 4) if c1 > c0 else None

    def _trim(self, now: float) -> None:
        while self._marks and self._marks[0][0] < now - self.window_s:
            self._marks.popleft()
