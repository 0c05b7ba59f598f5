"""Quality: verify reports and gates, dataset metrics (reads run dirs and files via datamill.store)."""

from datamill.quality.gates import evaluate, load_gates
from datamill.quality.verify import verify

__all__ = ["evaluate", "load_gates", "verify"]
