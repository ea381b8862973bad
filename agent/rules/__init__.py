"""The alarm engine: vectorized rule kinds over all points, and the alarm lifecycle.

rows.py       debounced detectors (on/off delays) shared by every kind
threshold.py  two-level high/low limits with hysteresis
trend.py      rate of change (weighted least-squares slope), deviation from a baseline
window.py     step drop within a window, event counts within a window (counter wrap)
state.py      discrete states, and states held while another point's gate is on
quality.py    stale, frozen, out of range, 4-20 mA loop fault
lifecycle.py  latching, acknowledgement, shelving, chattering, restart snapshot
registry.py   rule kinds by name: config keys, spec builder, evaluator (docs/extending.md)
builtin.py    the built-in kinds' registrations, in evaluation order
engine.py     RuleEngine: one vectorized step per frame over every registered kind
alarms.py     the engine's alarm book: lifecycle, operator actions, active list, snapshot
texts.py      Chinese and English alarm texts

The test oracle (per point, plain Python, written from the documents) is
tests/oracles/rules_reference.py; it shares no code with this package.
"""

from agent.core.model import Direction
from agent.rules.engine import ActiveAlarm, AlarmLookupError, RuleEngine
from agent.rules.texts import LEVELS, make_event, transition_of
from agent.rules.threshold import band_limit

DIRECTIONS: tuple[Direction, Direction] = ("high", "low")

__all__ = [
    "DIRECTIONS",
    "LEVELS",
    "ActiveAlarm",
    "AlarmLookupError",
    "RuleEngine",
    "band_limit",
    "make_event",
    "transition_of",
]
