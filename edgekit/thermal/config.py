"""Thermal/power tunables in one place, each with its unit in its name and a one-line reason.
This is the thermal package's only tunables module: agent, controller, sources, monitor and
the node's status service take their numbers from here.

Board power figures come from ../shared/docs/pi-facts.md ("The boards" table); the firmware
thresholds are `edgekit.settings.throttle_temp_c` (80 °C) and `hard_limit_temp_c` (85 °C).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit import settings

# --- sampling (node agent) -----------------------------------------------------------------
sample_interval_s = 1.0  # 1 Hz: the die reacts within seconds, the case within minutes
ring_buffer_len = 120  # samples kept on the node (2 min at 1 Hz) for late/slow readers
vcgencmd_timeout_s = 2.0  # a wedged firmware mailbox must not stall the sampler
vcgencmd_retry_s = 60.0  # after vcgencmd is missing/failing, try again this much later
pmic_retry_s = 300.0  # a board without `pmic_read_adc` (Pi 4) is asked again this rarely
status_file_period_s = 2.0  # edgekit.node.agent rewrites run/agent.json this often (no Ray)

# --- physical plausibility -------------------------------------------------------------------
min_plausible_temp_c = -40.0  # below this a thermal zone reading is a broken sensor
max_plausible_temp_c = 125.0  # silicon junction limit; 200 °C means garbage
max_plausible_freq_mhz = 5000.0  # no Pi-class core clocks above this
max_plausible_power_w = 60.0  # a Pi 5 with its 27 W supply cannot draw more

# --- board power model (estimate when nothing measures power) --------------------------------
#: board -> (idle W, full-CPU-load W); pi-facts.md: Pi 4 about 3.1 W idle / 6.1 W full load,
#: Pi 5 about 2-3 W idle / 8-10 W full load (midpoints taken). Unknown boards use the Pi 4 row.
board_power_w: dict[str, tuple[float, float]] = {
    "Raspberry Pi 5": (2.5, 9.0),
    "Raspberry Pi 4": (3.1, 6.1),
}
default_board = "Raspberry Pi 4"


def board_power(board: str | None) -> tuple[str, float, float]:
    """(the board_power_w entry `board` falls under, its idle W, its full-load W); an unknown
    board counts as the default_board."""
    name = next((b for b in board_power_w if (board or "").startswith(b)), default_board)
    return (name, *board_power_w[name])
#: Pi 5 PMIC: the rails undercount the input (EXT5V has no current). Empirical correction
#: from pi-facts.md (unverified upstream): W_in = pmic_gain * sum(rails) + pmic_offset_w.
pmic_gain = 1.1451
pmic_offset_w = 0.5879


# --- head side ------------------------------------------------------------------------------
poll_interval_s = 1.0  # controller polls every agent once a second
stale_after_s = 5.0  # no new sample for this long (head clock) -> node telemetry untrusted
agent_call_timeout_s = 2.0  # one Ray call to an agent; a wedged node must not stall the loop
agent_lookup_retry_s = 5.0  # an agent actor not found is looked up again this much later
agent_restart_retry_s = 2.0  # an agent that could not be started (node away) is retried then
weight_step = 0.05  # weight changes smaller than this are not pushed to the router (no churn)
history_len = 120  # temperature points kept per node (slope window and sparkline)
history_shown = 60  # temperature points per node in /edgekit/status (the monitor's trend)
decisions_kept = 200  # decisions kept in memory (decisions.csv has them all)
decisions_shown = 50  # latest decisions in /edgekit/status


@dataclass(frozen=True)
class PolicyConfig:
    """Thermal policy thresholds (°C, s). Defaults keep a Pi below its 80 °C throttle point."""

    throttle_temp_c: float = settings.throttle_temp_c  # firmware throttles from here
    drain_temp_c: float = 78.0  # predicted at/above this -> drain before the firmware acts
    shed_start_temp_c: float = 70.0  # predicted above this -> weight falls linearly
    readmit_temp_c: float = 72.0  # drained node returns only below this ...
    readmit_hold_s: float = 5.0  # ... and not rising for this long (hysteresis, no flapping)
    min_drain_s: float = 5.0  # a drained node stays out at least this long, doubled per flap:
    flap_window_s: float = 60.0  # drained again within this of its readmit: a flap
    max_drain_s: float = 300.0  # the longest a flapping node is kept out before another try
    slope_window_s: float = 10.0  # least-squares slope over this much history
    lookahead_s: float = 6.0  # predict this far ahead (a few die time constants)
    min_weight: float = 0.1  # a shedding node still takes a trickle (keeps its stats alive)
    stale_weight: float = 0.5  # neutral weight for a node whose telemetry is stale
    hot_threads_temp_c: float = 74.0  # above this, suggest fewer worker threads ...
    hot_threads_frac: float = 0.5  # ... this share of them
    rising_eps_c_per_s: float = 0.02  # slope below this is "not rising" (sensor noise ~0.5 °C)
    # power cap (cluster admission control)
    cap_backoff: float = 0.8  # multiply the in-flight limit by this while over the cap
    cap_release_frac: float = 0.9  # raise the limit by one while below this fraction of the cap
    cap_min_in_flight: int = 1  # never admit fewer than this many requests in flight
    cap_max_in_flight: int = 64  # limit reaching this is lifted (no cap needed)
