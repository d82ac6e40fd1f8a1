"""Regenerate the README's screenshots: every tab of the workbench at 1440x880 and 1920x1080.

Offscreen (no display needed): writes a synthetic sample (``vitdesk sample``), trains a
tiny run on it with ``vitdesk train`` (about a minute on two cores), opens the
workbench on the sample with that run loaded, draws a region and a distance on the
viewer, runs each analysis tab once (inference, fairness, robustness, report), switches
every tab and saves ``<size>/<nn>-<tab>.png`` next to this script. The PNGs are
palette images (256 colours, Pillow when installed) so sixteen of them stay small.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_screenshots.py
        [--out docs/screenshots] [--run EXISTING_RUN] [--sample EXISTING_SAMPLE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
SIZES = ((1440, 880), (1920, 1080))


def _vitdesk(*args: str) -> None:
    cmd = [sys.executable, "-m", "vitdesk", *args]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def _spin(app, seconds: float, until=None) -> bool:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.01)
    return until is None


def _save(widget, path: Path) -> bool:
    """Grab ``widget`` as a PNG; a 256-colour palette one when Pillow is there (a third
    of the size, and a dark UI loses nothing visible)."""
    image = widget.grab().toImage()
    try:
        from PIL import Image
    except ImportError:
        return image.save(str(path), "PNG")
    from PySide6.QtGui import QImage

    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h = rgb.width(), rgb.height()
    data = bytes(rgb.constBits())[: rgb.bytesPerLine() * h]
    pil = Image.frombuffer("RGB", (w, h), data, "raw", "RGB", rgb.bytesPerLine(), 1)
    pil.quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                 dither=Image.Dither.NONE).save(path, optimize=True)
    return True


def _run_analyses(app, win) -> None:
    """Fill the analysis tabs with the tiny run's results (each in its worker)."""
    jobs = (("Inference", win.inference_tab.run), ("Fairness", win.fairness_tab.run),
            ("Robustness", win.robustness_tab.run), ("Report", win.report_tab.build))
    for name, start in jobs:
        try:
            task = start()
        except Exception as exc:  # noqa: BLE001 - a screenshot without results is still one
            print(f"{name}: not run ({exc})", file=sys.stderr)
            continue
        if task is not None and not _spin(app, 300, until=lambda t=task: not t.is_running()):
            print(f"{name}: still running after 300 s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--sample", help="an existing sample folder (else one is generated)")
    ap.add_argument("--run", help="an existing run folder (else a tiny one is trained)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="vitdesk-shots-"))
    os.environ["VITDESK_SETTINGS"] = str(tmp / "settings.ini")  # never the user's settings
    sample = Path(args.sample) if args.sample else tmp / "sample"
    if not args.sample:
        _vitdesk("sample", "--out", str(sample), "--patients", "12", "--slices", "16")
    run = Path(args.run) if args.run else tmp / "run"
    if not args.run:
        _vitdesk("train", "--data", str(sample), "--model", "vit_test_tiny", "--pretrained",
                 "none", "--img-size", "32", "--epochs", "1,1,2", "--device", "cpu",
                 "--seed", "0", "--out", str(run))

    from PySide6.QtWidgets import QApplication

    from vitdesk.gui.main_window import TAB_ORDER, MainWindow
    from vitdesk.gui.resources import stylesheet

    app = QApplication.instance() or QApplication([])
    app.setApplicationName("vitdesk")
    app.setStyle("Fusion")
    app.setStyleSheet(stylesheet())
    win = MainWindow()
    win.resize(*SIZES[0])
    win.show()
    win.open_path(str(sample))
    _spin(app, 120, until=lambda: win.session.viewer.volume is not None)
    win.current_run.load(str(run))
    _spin(app, 120, until=lambda: win.current_run.run is not None)
    _spin(app, 2.0)  # thumbnails, the run's tabs fill in
    vol = win.session.viewer.volume
    _, ny, nx = vol.shape
    sy, sx = float(vol.spacing[1]), float(vol.spacing[2])
    win.viewer.tools.add_region("ellipse", (nx * sx * 0.35, ny * sy * 0.4, nx * sx * 0.22,
                                            ny * sy * 0.15))
    win.viewer.tools.add_distance((nx * sx * 0.2, ny * sy * 0.75), (nx * sx * 0.7, ny * sy * 0.8))
    _run_analyses(app, win)

    out = Path(args.out)
    written = []
    for w, h in SIZES:
        folder = out / f"{w}x{h}"
        folder.mkdir(parents=True, exist_ok=True)
        win.resize(w, h)
        _spin(app, 0.5)
        for i, name in enumerate(TAB_ORDER):
            win.tabs.setCurrentIndex(i)
            _spin(app, 1.0)
            if name == "Attention":  # its maps are computed when the tab shows
                _spin(app, 120, until=lambda: win.attention_tab.result is not None)
                _spin(app, 0.5)
            path = folder / f"{i + 1:02d}-{name.lower()}.png"
            if not _save(win, path):
                print(f"could not write {path}", file=sys.stderr)
                return 1
            written.append(path)
    win.training_tab.ask_stop = lambda: True
    win.close()
    total = sum(p.stat().st_size for p in written)
    for p in written:
        print(f"{p.relative_to(out)}  {p.stat().st_size / 1024:.0f} KiB")
    print(f"{len(written)} screenshots, {total / 1e6:.2f} MB in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
