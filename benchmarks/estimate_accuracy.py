"""How close `gradjax validate --estimate` comes to the run it estimates, and what it costs.

    python benchmarks/estimate_accuracy.py SWEEP.toml [SWEEP.toml ...]

For each sweep, in a fresh process each (empty compile cache, nothing compiled yet):
`gradjax validate --estimate`, then `gradjax run --no-cache` into a temporary folder. Prints the
estimated and measured seconds (the run's wall time, which also holds its Parquet writes and
compiles overlapped with computing), their ratio, and the estimate's own time as a share of the
run's. Run it on a quiet machine; the constants of `gradjax.run.estimate` were fitted this way.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gradjax", *args], capture_output=True,
                          text=True, check=True)
    return time.perf_counter() - start, done.stdout + done.stderr


def main(paths: list[str]) -> None:
    print(f"{'sweep':<28} {'estimate s':>10} {'run s':>8} {'est/run':>8} "
          f"{'estimate cost':>14} {'of the run':>10}")
    for path in paths:
        estimate_wall, said = timed("validate", path, "--estimate")
        guess = float(re.search(r"about ([\d.e+]+) s:", said).group(1))
        with tempfile.TemporaryDirectory() as out:
            run_wall, _ = timed("run", path, "--out", str(Path(out) / "r"), "--no-cache",
                                "--quiet")
        print(f"{Path(path).stem:<28} {guess:>10.3g} {run_wall:>8.3g} {guess / run_wall:>8.2f} "
              f"{estimate_wall:>13.2f}s {estimate_wall / run_wall:>10.1%}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["sweeps/seed_examples.toml", "sweeps/bench_grid.toml"])
