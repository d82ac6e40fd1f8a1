"""GUI latency benchmark, part 1: time to display the next slice while scrolling.

Scrolls a 512x512 CT-sized series in the real slice viewer and times, per step,
the state change plus a synchronous repaint of the view (what the user waits
for). Two display paths are measured in the same run:

* ``levels``  (used by vitdesk): ``ImageItem.setImage(hu, levels=(L-W/2, L+W/2))``,
  pyqtgraph's own lookup does the windowing;
* ``uint8``   (reference): window to uint8 with ``window_uint8`` first, then show.

Target: median < 16 ms (one 60 Hz frame). Prints a table last and writes JSON to
``bench/results/gui_latency.json``. Runs offscreen unless a display is set.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_latency.py [--slices 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _volume(n: int, size: int):
    from vitdesk.imaging.volume import Volume

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.42 * size) ** 2
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)[None].repeat(n, axis=0)
    hu += rng.normal(0, 20, hu.shape).astype(np.float32)
    return Volume(hu=hu, spacing=(1.0, 0.7, 0.7), meta={"Modality": "CT"}, key="bench")


def _measure(view, viewer, app, n_steps: int, uint8: bool) -> list[float]:
    from vitdesk.imaging.windowing import window_uint8

    vp = view.graphics.viewport()
    times = []
    app.processEvents()
    for _ in range(n_steps):
        t0 = time.perf_counter()
        if uint8:
            # Reference path: window in numpy, show uint8 with fixed levels.
            i = min(viewer.index + 1, viewer.n_slices() - 1)
            viewer._index[viewer.axis] = i  # bypass the viewer's own render
            w = view.window
            view.image.setImage(window_uint8(viewer.volume.hu[i], w.width, w.level),
                                autoLevels=False, levels=(0, 255))
        else:
            viewer.step(1)
        vp.repaint()  # synchronous paint: the frame the user sees
        times.append((time.perf_counter() - t0) * 1000.0)
        if viewer.index >= viewer.n_slices() - 1:
            viewer.set_index(0)
            app.processEvents()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3, help="passes through the series")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gui_latency.json"))
    args = ap.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from vitdesk.gui.slice_view import SliceView
    from vitdesk.gui.state import ViewerState, WindowState

    app = QApplication.instance() or QApplication([])
    viewer, window = ViewerState(), WindowState(400, 40)
    view = SliceView(viewer, window)
    view.resize(900, 900)
    view.show()
    app.processEvents()
    viewer.set_volume(_volume(args.slices, args.size))
    app.processEvents()
    n = args.slices * args.rounds
    _measure(view, viewer, app, 10, uint8=False)  # warm-up
    # Interleave short blocks of both paths so load spikes on a shared machine hit
    # both alike (a fair same-run comparison).
    block = 16
    times: dict[str, list[float]] = {"levels": [], "uint8": []}
    for _ in range(max(1, n // block)):
        for name, uint8 in (("levels", False), ("uint8", True)):
            times[name] += _measure(view, viewer, app, block, uint8)
    results = {}
    for name in ("levels", "uint8"):
        t = np.asarray(times[name])
        results[name] = {"median_ms": float(np.median(t)), "p99_ms": float(np.percentile(t, 99)),
                         "mean_ms": float(t.mean()), "n": int(t.size)}
    out = {
        "bench": "gui_latency.slice_display",
        "series": f"{args.slices}x{args.size}x{args.size}",
        "platform": os.environ.get("QT_QPA_PLATFORM", ""),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "target_median_ms": 16.0,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    view.close()

    print(f"next-slice display, {out['series']} series, Qt platform '{out['platform']}'")
    print(f"{'path':<28}{'median ms':>10}{'p99 ms':>10}{'n':>6}")
    for name, label in (("levels", "levels (vitdesk)"), ("uint8", "window_uint8 (reference)")):
        r = results[name]
        print(f"{label:<28}{r['median_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['n']:>6}")
    ok = results["levels"]["median_ms"] < 16.0
    print(f"target median < 16 ms: {'met' if ok else 'NOT met'}; json: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
