"""How every benchmark script ends: Ctrl+C (or SIGTERM, which a sweep turns into the same) is one
line and exit 130, never a traceback. A sweep cut short says where its state is, if it outlives the run."""

from __future__ import annotations

import os
import sys
from typing import Callable


def run(main: Callable[[], int], name: str) -> int:
    from tuner import recover
    from tuner.pipeline import Interrupted

    recover.sigterm_as_sigint()  # cluster.start keeps it past ray.init
    try:
        return main()
    except (Interrupted, KeyboardInterrupt) as e:
        where = getattr(e, "sweep_dir", None)
        kept = f"; the sweep's state is in {where}" if where and os.path.isdir(where) else ""
        print(f"{name}: interrupted{kept}", file=sys.stderr)
        return 130
