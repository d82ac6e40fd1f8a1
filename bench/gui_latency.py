"""GUI latency benchmark: slice display while scrolling, event-loop lateness while training.

Mode ``slice`` (default), time to display the next slice while scrolling.

Scrolls a 512x512 CT-sized series in the real slice viewer and times, per step,
the state change plus a synchronous repaint of the view (what the user waits
for). Two display paths are measured in the same run:

* ``levels``  (used by vitdesk): ``ImageItem.setImage(hu, levels=(L-W/2, L+W/2))``,
  pyqtgraph's own lookup does the windowing;
* ``uint8``   (reference): window to uint8 with ``window_uint8`` first, then show.

A third path, ``levels + overlays``, is the vitdesk path with everything a reader
may have on: the reading aids (corner annotations, orientation letters, scale
bar), an attention-style heat map with a transparent low end and its colour bar,
and an ellipse region whose mean/SD is recomputed on every slice.

Target: median < 16 ms (one 60 Hz frame) with the overlays on. Prints a table last
and writes JSON to ``bench/results/gui_latency.json``. Runs offscreen unless a display is set.

Mode ``training``: the real main window runs a training in its worker thread (a
tiny ViT on generated CT data, shown live on the Training tab's Progress page)
while a 10 ms QTimer on the GUI thread records how late each tick fires. The
reference, measured in the same run, is the same timer on the idle window; an
optional second reference (``--naive``) trains with every step forwarded and the
plots redrawn on every event, to show what the throttling buys. Targets while
training: p99 < 50 ms, max < 200 ms. With ``--overlays`` (the default) the viewer shows a
series with every overlay on during both the idle reference and the training;
``--cine FPS`` also plays it as cine, so the lateness includes drawing slices.
JSON: ``bench/results/gui_latency_training.json``.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_latency.py [--slices 64] [--rounds 3]
    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_latency.py --mode training \
        [--seconds 60] [--naive 30]
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


def _add_overlays(view, volume) -> None:
    """Heat map (transparent low end) + colour bar + an ellipse region on the viewer."""
    import pyqtgraph as pg
    from PySide6.QtCore import QRectF

    from vitdesk.gui import geometry
    from vitdesk.gui.reading_aids import overlay_lut

    n, h, w = volume.hu.shape
    yy, xx = np.mgrid[0:h, 0:w]
    heat = np.exp(-(((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / (2 * (0.15 * w) ** 2)))
    stack = (heat[None] * np.linspace(0.3, 1.0, n)[:, None, None]).astype(np.float32)
    item = pg.ImageItem(axisOrder="row-major")
    item.setZValue(10)
    item.setOpacity(0.5)
    lut = overlay_lut("inferno")
    item.setLookupTable(lut)
    view.view.addItem(item)
    pw, ph = geometry.pixel_size(volume, "axial")

    def show(_i=None) -> None:  # what the Attention tab does on each slice
        item.setImage(stack[view.viewer.index], autoLevels=False, levels=(0.0, 1.0))
        item.setRect(QRectF(0, 0, w * pw, h * ph))

    view.viewer.slice_changed.connect(show)
    show()
    view.set_overlay_colorbar(lut, 0.0, 1.0, "attention")
    view.tools.add_region("ellipse", (w * pw * 0.3, h * ph * 0.3, w * pw * 0.3, h * ph * 0.2))
    view.tools.add_distance((w * pw * 0.1, h * ph * 0.8), (w * pw * 0.6, h * ph * 0.9))
    view._bench_overlay = item


def _set_overlays(view, on: bool) -> None:
    view._bench_overlay.setVisible(on)
    for m in view.tools.items:
        m.roi.setVisible(on)
        m.label.setVisible(on)
    view.overlay.setVisible(on)


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


class _Lateness:
    """A 10 ms timer on the GUI thread; each tick records how late it fired (ms)."""

    def __init__(self, interval_ms: int = 10) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.interval = interval_ms
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.samples: list[float] = []
        self._prev: float | None = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._prev is not None:
            self.samples.append(max(0.0, (now - self._prev) * 1000.0 - self.interval))
        self._prev = now

    def start(self) -> None:
        self.samples, self._prev = [], None
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return list(self.samples)


def _stats(samples: list[float]) -> dict:
    t = np.asarray(samples) if samples else np.zeros(1)
    return {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
            "max_ms": float(t.max()), "n": len(samples)}


def _spin(app, seconds: float, until=None) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        if until is not None and until():
            return
        time.sleep(0.002)


def _training_mode(args: argparse.Namespace) -> int:
    import tempfile

    import torch
    from PySide6.QtWidgets import QApplication

    from vitdesk.gui.main_window import TAB_ORDER, MainWindow
    from vitdesk.gui.resources import stylesheet
    from vitdesk.gui.tabs import training_tab as tt
    from vitdesk.imaging.synthetic import generate_sample

    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval / 1000.0)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)  # global: the worker's training uses it
    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    app.setStyleSheet(stylesheet())
    tmp = Path(tempfile.mkdtemp(prefix="vitdesk-bench-"))
    generate_sample(tmp / "sample", patients=8, slices=12, size=64, seed=0)
    os.environ["VITDESK_SETTINGS"] = str(tmp / "settings.ini")
    win = MainWindow()
    win.resize(1440, 880)
    win.show()
    win.tabs.setCurrentIndex(TAB_ORDER.index("Training"))
    tab = win.training_tab
    f = tab.form
    f.model_combo.setCurrentText("vit_test_tiny")
    f.img_spin.setValue(args.img_size)
    f.set_weights("none")
    f.force_staged_box.setChecked(True)
    for row, n in enumerate((1, 1, 100000)):  # runs until cancelled
        f.stage_table.epochs_spin(row).setValue(n)
    f.batch_spin.setValue(8)
    f.attention_combo.setCurrentIndex(f.attention_combo.findData("eager"))
    f.src_radio.setChecked(True)
    f.src_edit.setText(str(tmp / "sample"))
    probe = _Lateness()
    if args.overlays:
        # A series on the viewer with every overlay (and, with --cine, played) throughout.
        win.open_path(str(tmp / "sample"))
        _spin(app, 60.0, until=lambda: win.session.viewer.volume is not None)
        _add_overlays(win.viewer, win.session.viewer.volume)
        if args.cine > 0:
            win.viewer.fps_spin.setValue(int(args.cine))
            win.viewer.set_cine(True)
    _spin(app, 1.0)

    def session(name: str, seconds: float) -> dict:
        task = tab.start(out=str(tmp / name))
        t0 = time.perf_counter()
        # startup (imports, data loading) is measured apart from steady training
        probe.start()
        _spin(app, 120.0, until=lambda: tab.progress.global_step > 0 or not task.is_running())
        startup = probe.stop()
        startup_s = time.perf_counter() - t0
        redraws0 = tab.plots.redraws
        step0 = tab.progress.global_step
        probe.start()
        _spin(app, seconds, until=lambda: not task.is_running())
        lat = probe.stop()
        steps = tab.progress.global_step - step0
        redraws = tab.plots.redraws - redraws0
        tab.cancel()
        _spin(app, 60.0, until=lambda: not task.is_running())
        _spin(app, 0.2)
        return {**_stats(lat), "startup": {**_stats(startup), "seconds": round(startup_s, 2)},
                "seconds": seconds, "optimizer_steps": steps,
                "steps_per_s": round(steps / seconds, 1),
                "redraws_per_s": round(redraws / seconds, 1),
                "epochs": len(tab.plots.epoch_loss.data)}

    results: dict[str, dict] = {}
    probe.start()
    _spin(app, args.idle)
    results["idle (reference)"] = _stats(probe.stop())
    results["training (vitdesk)"] = session("run", args.seconds)
    if args.naive > 0:
        # Reference: every step forwarded and drawn at once (no thinning, no redraw cap).
        orig_run, orig_on_event = tt.run_training, tab._on_event
        f.cfg.log_every = 1

        def naive_run(cfg, resume=False, cancel=None, listener=None):
            return orig_run(cfg, resume, cancel, listener, step_interval=0.0)

        def naive_on_event(ev):
            orig_on_event(ev)
            tab.plots.flush()

        tt.run_training = naive_run
        tab._on_event = naive_on_event  # connected by the next start()
        results["training (naive reference)"] = session("naive", args.naive)
        tt.run_training = orig_run
        del tab._on_event

    out = {
        "bench": "gui_latency.training",
        "model": "vit_test_tiny", "img_size": args.img_size, "batch_size": 8,
        "timer_ms": 10, "overlays": bool(args.overlays),
        "cine_fps": args.cine if args.overlays else 0,
        "platform": os.environ.get("QT_QPA_PLATFORM", ""),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "torch_threads_gui": torch.get_num_threads(),
        # run_training leaves a core to the GUI thread and renices the worker thread
        "torch_threads_training": max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1)),
        "gil_switch_interval_ms": sys.getswitchinterval() * 1000.0,
        "targets": {"p99_ms": 50.0, "max_ms": 200.0},
        "results": results,
    }
    Path(args.out_training).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_training).write_text(json.dumps(out, indent=2))
    tab.ask_stop = lambda: True
    win.close()

    print(f"GUI event-loop lateness of a 10 ms timer (ms), Qt platform '{out['platform']}', "
          f"{os.cpu_count()} CPUs, training torch threads {out['torch_threads_training']}")
    for name, r in results.items():
        if "startup" in r:
            s = r["startup"]
            print(f"  {name}: startup {s['seconds']} s (imports, data) p99 {s['p99_ms']:.1f} "
                  f"max {s['max_ms']:.1f}; {r['steps_per_s']} steps/s, "
                  f"{r['redraws_per_s']} redraws/s, {r['epochs']} epochs")
    print(f"{'phase':<30}{'p50':>8}{'p99':>8}{'max':>8}{'ticks':>8}")
    for name, r in results.items():
        print(f"{name:<30}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['max_ms']:>8.1f}{r['n']:>8}")
    r = results["training (vitdesk)"]
    ok = r["p99_ms"] < 50.0 and r["max_ms"] < 200.0
    print(f"targets p99 < 50 ms, max < 200 ms while training: {'met' if ok else 'NOT met'}; "
          f"json: {args.out_training}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("slice", "training"), default="slice")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="training mode: seconds of steady training measured")
    ap.add_argument("--idle", type=float, default=10.0,
                    help="training mode: seconds of the idle reference")
    ap.add_argument("--naive", type=float, default=0.0,
                    help="training mode: seconds of the unthrottled reference (0 = skip)")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--overlays", action=argparse.BooleanOptionalAction, default=True,
                    help="overlays on the viewer (slice mode: a measured path; training "
                         "mode: a series shown with its overlays)")
    ap.add_argument("--cine", type=float, default=0.0,
                    help="training mode with --overlays: play the series at this fps")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="training mode: Python's GIL switch interval in ms (0 = as set)")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="training mode: torch intra-op threads (0 = torch's default)")
    ap.add_argument("--out-training",
                    default=str(ROOT / "bench" / "results" / "gui_latency_training.json"))
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3, help="passes through the series")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gui_latency.json"))
    args = ap.parse_args(argv)
    if args.mode == "training":
        return _training_mode(args)

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
    _add_overlays(view, viewer.volume)
    app.processEvents()
    n = args.slices * args.rounds
    _measure(view, viewer, app, 10, uint8=False)  # warm-up
    # Interleave short blocks of both paths so load spikes on a shared machine hit
    # both alike (a fair same-run comparison).
    block = 16
    paths = [("levels", False, False), ("uint8", True, False)]
    if args.overlays:
        paths.insert(1, ("levels + overlays", False, True))
    times: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    for _ in range(max(1, n // block)):
        for name, uint8, overlays in paths:
            _set_overlays(view, overlays)
            times[name] += _measure(view, viewer, app, block, uint8)
    results = {}
    for name in times:
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
    labels = {"levels": "levels (vitdesk)", "levels + overlays": "levels + overlays",
              "uint8": "window_uint8 (reference)"}
    for name, r in results.items():
        print(f"{labels[name]:<28}{r['median_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['n']:>6}")
    key = "levels + overlays" if args.overlays else "levels"
    ok = results[key]["median_ms"] < 16.0
    print(f"target median < 16 ms ({key}): {'met' if ok else 'NOT met'}; json: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
