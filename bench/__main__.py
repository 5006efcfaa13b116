"""Run every benchmark in one process run and print medians, p90s and ratios to a baseline.

python -m bench                 # full run (a few minutes)
python -m bench --quick         # smoke run, under a minute; numbers are rough
python -m bench --write         # also write BENCHMARKS.md and bench/reload-latency.png
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import cases, reload
from .cases import Row

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few trials; checks it still runs")
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md and the plot")
    parser.add_argument("--only", metavar="WORD", help="run only the steps whose name has WORD")
    options = parser.parse_args()
    q = options.quick
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="hotr-bench-"))
    os.environ["HOTR_PRIVATE_DIR"] = str(work / "private")
    os.environ["HOTR_CACHE_DIR"] = str(work / "cache")  # never the user's object cache
    rows: list[Row] = []
    try:
        steps = [
            ("reload latency by size", lambda: reload.sizes(work, 12 if q else 120)),
            ("reload back to back", lambda: reload.back_to_back(work, 100 if q else 1000)),
            ("reload memory", lambda: reload.memory(work, 4 if q else 20)),
            ("cold start", lambda: reload.cold_start(work, 3 if q else 20)),
            ("alternatives", lambda: cases.alternatives(work, 3 if q else 20)),
            ("call overhead", lambda: cases.call_overhead(work, 3 if q else 15)),
            ("typed calls", lambda: cases.typed_calls(work, 3 if q else 15)),
            ("idle cost", lambda: cases.idle_cost(work, 1.0 if q else 10.0)),
            ("scale", lambda: cases.scale(work, 20 if q else 200)),
            ("endurance", lambda: cases.endurance(work, 200 if q else 1000)),
            ("edit to answer (gcc)", lambda: cases.edit_to_answer(work, 5 if q else 40, "gcc")),
            ("notebook cell", lambda: cases.cell_round_trip(work, 5 if q else 40)),
            ("module calls", lambda: cases.module_calls(work, 3 if q else 15)),
            ("module edit to answer", lambda: cases.module_edit(work, 5 if q else 40)),
        ]
        if shutil.which("tcc"):
            steps.append(
                ("edit to answer (tcc)", lambda: cases.edit_to_answer(work, 5 if q else 40, "tcc"))
            )
        for cc in ("gcc", "tcc"):
            if shutil.which(cc) is None:
                continue
            for files in (20, 100):
                steps.append(
                    (
                        f"save one of {files} ({cc})",
                        functools.partial(cases.save_one_of, work, 5 if q else 30, cc, files),
                    )
                )
        step: Callable[[], list[Row]]
        for label, step in steps:
            if options.only and options.only not in label:
                continue
            print(f"... {label}", file=sys.stderr, flush=True)
            rows.extend(step())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = render(rows)
    header = describe_machine(time.monotonic() - started, q)
    print(header)
    print(table)
    if options.write:
        (ROOT / "BENCHMARKS.md").write_text(markdown(header, table))
        plot(rows, ROOT / "bench" / "reload-latency.png")
    return 0


def scaled(row: Row, value: float) -> float:
    unit = row.unit.split()[0] if row.unit else ""
    return value * {"ms": 1e3, "us": 1e6, "ns": 1e9}.get(unit, 1.0)


def render(rows: list[Row]) -> str:
    medians = {r.name: statistics.median(r.samples) for r in rows}
    lines = [
        "| section | measurement | median | p90 | n | ratio to baseline |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        med = medians[r.name]
        if r.section == "endurance":
            lines.append(f"| {r.section} | {r.name} | {r.extra['before']:.1f} -> {med:.1f} | | | |")
            continue
        p90 = statistics.quantiles(r.samples, n=10)[-1] if len(r.samples) >= 10 else max(r.samples)
        ratio = ""
        if r.baseline in medians:
            ratio = f"{med / medians[r.baseline]:.3g}x of `{r.baseline}`"
            if r.section in ("edit", "start"):
                ratio = f"{ratio}; {(med - medians[r.baseline]) * 1e3:+.2f} ms"
        unit = f" {r.unit}" if r.unit else ""
        lines.append(
            f"| {r.section} | {r.name} | {scaled(r, med):.3g}{unit} | {scaled(r, p90):.3g}{unit} "
            f"| {len(r.samples)} | {ratio} |"
        )
    return "\n".join(lines)


def describe_machine(seconds: float, quick: bool) -> str:
    with open("/proc/cpuinfo") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = models[0] if models else platform.processor()
    return (
        f"{datetime.date.today()} · {cpu} ({os.cpu_count()} cores) · Linux "
        f"{platform.release()} · Python {platform.python_version()} · "
        f"{'quick' if quick else 'full'} run in {seconds:.0f} s"
    )


def markdown(header: str, table: str) -> str:
    return f"""# hotr benchmarks

Produced by `python -m bench --write` (nothing here is typed in by hand). Every ratio compares
medians measured in the same run. Times are wall-clock; "p90" is the 90th percentile.

{header}

{table}

![reload latency distributions](bench/reload-latency.png)

What the rows measure:
- **reload**: a new `.so` lands (renamed into place, or written by the linker) until a function
  obtained before the change returns the new value, timed from the moment the rename or the
  linker returned in the process that made the change (a writer process of its own, as an
  editor or a linker is: timed in the benchmark's process, a reloading thread holding the GIL
  would delay the start). The floor is a bare loop doing only inotify wait + `copy_file_range` +
  dlopen + dlsym + call, into a file it made ahead (as hotr does: creating a file can cost
  more than the copy); it and hotr take turns, trial by trial, who goes first rotating. Sizes
  16 KiB to 50 MiB, and a library with a million relocations. `hotr.load`'s thread is compared
  with the floor in a thread of its own. Back to back: 1,000 reloads in a row, housekeeping
  included, per reload. `watchfiles.watch()` runs with its defaults (50 ms step); the restarts
  kill and respawn a minimal `host.py`.
- **memory**: RSS growth of a child process over 20 reloads of a 50 MiB library.
- **start**: a child interpreter with and without `import hotr`; the first `hotr.load()` call
  against `ctypes.CDLL`; the exit with `hotr.load`'s thread watching against one with hotr
  imported and the library loaded by ctypes.
- **calls**: per-call time of live, guarded and typed functions against plain ctypes calls of
  the same library; a caught crash against a bare fault and handler return in C.
- **idle**: CPU per 10 s of a process watching unchanging libraries with `hotr.load`, against
  watchfiles' polling watcher.
- **scale**: one library of 1 or 100 watched changes: reloaders of their own behind one selector,
  and one `hotr.Watcher` (timed until its thread has reloaded, so it includes a thread hand-off).
- **endurance**: resources after 10 reloads and after many more in one process.
- **edit** / **cell** / **modules** / **incremental**: the compiler run alone (the command hotr
  runs, started as hotr starts it), or one file compiled and linked by hand, against saving the
  source (or re-running an edited `%%hotr` cell) until the new code answers; module calls against
  the same builtin function called directly.
"""


def plot(rows: list[Row], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[plot]')", file=sys.stderr)
        return
    reload_rows = [r for r in rows if r.section == "reload"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.boxplot(
        [[s * 1e3 for s in r.samples] for r in reload_rows],
        orientation="horizontal",
        whis=(5, 95),
        showfliers=False,
    )
    ax.set_yticks(range(1, len(reload_rows) + 1), [r.name for r in reload_rows], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds from the new .so landing to the new code answering (log)")
    ax.set_title("hotr reload latency against the floor and the alternatives")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
