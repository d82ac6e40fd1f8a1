#!/usr/bin/env bash
# Smoke-test a built PyInstaller bundle of vitdesk.
#
#   packaging/smoke.sh BUNDLE_DIR [WORK_DIR]
#
# BUNDLE_DIR is the one-folder bundle (the folder holding the `vitdesk` executable,
# e.g. /tmp/pyi/dist/vitdesk). WORK_DIR (default: a fresh temporary folder) receives
# the outputs and is deleted at the end unless KEEP=1. Every command runs without a
# network when `unshare -rn` works here (checks that nothing is downloaded at run
# time); set OFFLINE=0 to skip that. SKIP_DEMO=1 leaves out the ~3 minute demo.
# Exit status: the number of failed checks (0 = all passed).
set -u

if [ $# -lt 1 ] || [ ! -x "$1/vitdesk" ]; then
    echo "usage: $0 BUNDLE_DIR [WORK_DIR]  (BUNDLE_DIR/vitdesk must be executable)" >&2
    exit 64
fi
BUNDLE=$(cd "$1" && pwd)
EXE="$BUNDLE/vitdesk"
WORK=${2:-$(mktemp -d /tmp/vitdesk-smoke.XXXXXX)}
mkdir -p "$WORK"
if [ "${KEEP:-0}" != 1 ]; then
    trap 'rm -rf "$WORK"' EXIT
fi

# Without a network namespace every run below could still reach the internet; with
# one, a run-time download would fail the check instead of passing silently.
NET=()
if [ "${OFFLINE:-1}" = 1 ] && unshare -rn true 2>/dev/null; then
    NET=(unshare -rn)
    echo "network: off (unshare -rn)"
else
    echo "network: left on (unshare -rn unavailable or OFFLINE=0)"
fi

FAILED=0
pass() { echo "PASS  $1"; }
fail() {
    echo "FAIL  $1"
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 20 "$2" | sed 's/^/      | /'
    FAILED=$((FAILED + 1))
}
# run NAME SECONDS ARGS...: run the bundle, log to WORK/NAME.log, return its status.
run() {
    local name=$1 secs=$2
    shift 2
    local t0=$SECONDS
    timeout "$secs" "${NET[@]}" "$EXE" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    echo "      ($name: exit $rc, $((SECONDS - t0)) s)"
    return $rc
}
# A frozen app that lacks a module often prints a traceback yet exits 0 from a worker.
clean_log() { ! grep -qE "Traceback|ImportError|ModuleNotFoundError" "$WORK/$1.log"; }

# 1. version
if run version 60 --version && grep -qE "^vitdesk [0-9]+\.[0-9]+" "$WORK/version.log"; then
    pass "--version: $(cat "$WORK/version.log")"
else
    fail "--version" "$WORK/version.log"
fi

# 2. synthetic DICOM studies, then read them back
if run sample 300 sample --out "$WORK/s" --patients 4 --slices 4 && clean_log sample \
    && [ -f "$WORK/s/labels.csv" ]; then
    pass "sample: $(find "$WORK/s" -name '*.dcm' | wc -l) DICOM files + labels.csv"
else
    fail "sample" "$WORK/sample.log"
fi
if run inspect 300 inspect "$WORK/s" && clean_log inspect \
    && [ "$(grep -cE ' 4 slices ' "$WORK/inspect.log")" -eq 4 ]; then
    pass "inspect: 4 series of 4 slices"
else
    fail "inspect (expected 4 series lines with '4 slices')" "$WORK/inspect.log"
fi

# 3. compressed DICOM: JPEG 2000 and JPEG Extended go through pylibjpeg plugins found
# by entry points, JPEG-LS through pyjpegls, RLE through pydicom. The test files are
# pydicom's own, shipped inside the bundle.
TF="$BUNDLE/_internal/pydicom/data/test_files"
for f in MR_small_jp2klossless.dcm MR_small_jpeg_ls_lossless.dcm MR_small_RLE.dcm JPGExtended.dcm; do
    if [ ! -f "$TF/$f" ]; then
        fail "decode $f: not in the bundle ($TF)"
    elif run "decode_$f" 120 inspect "$TF/$f" && clean_log "decode_$f" \
        && grep -qE " 1 slice " "$WORK/decode_$f.log"; then
        pass "decode $f"
    else
        fail "decode $f" "$WORK/decode_$f.log"
    fi
done
EP=$(find "$BUNDLE/_internal" -maxdepth 1 -path '*pylibjpeg_*dist-info' -type d | wc -l)
if [ "$EP" -ge 3 ]; then
    pass "pylibjpeg plugin metadata (entry points): $EP dist-info folders"
else
    fail "pylibjpeg plugin metadata: $EP of 3 dist-info folders in the bundle"
fi

# Files whose absence shows no error: Qt draws a blank icon for a missing SVG or plugin.
I="$BUNDLE/_internal"
MISSING=""
for p in vitdesk/resources/style.qss vitdesk/resources/presets.csv \
    vitdesk/resources/icons/app.svg PySide6/Qt/plugins/platforms/libqoffscreen.so \
    PySide6/Qt/plugins/platforms/libqxcb.so PySide6/Qt/plugins/imageformats/libqsvg.so \
    PySide6/Qt/plugins/iconengines/libqsvgicon.so matplotlib/mpl-data/matplotlibrc; do
    [ -e "$I/$p" ] || MISSING="$MISSING $p"
done
if [ -z "$MISSING" ]; then
    pass "bundle holds vitdesk resources, Qt platform/SVG plugins, matplotlib data"
else
    fail "bundle lacks:$MISSING"
fi

# 4. the whole demo: sample -> MAE -> fine-tune -> CNN baseline -> evaluate -> report
if [ "${SKIP_DEMO:-0}" = 1 ]; then
    echo "SKIP  demo --quick (SKIP_DEMO=1)"
elif run demo 900 demo --quick --out "$WORK/demo" && clean_log demo \
    && [ "$(head -c 5 "$WORK/demo/report/report.pdf" 2>/dev/null)" = "%PDF-" ] \
    && [ -s "$WORK/demo/report/report.html" ] \
    && jq -e 'type == "object" and length > 0' "$WORK/demo/report/metrics.json" >/dev/null; then
    pass "demo --quick: report.pdf ($(stat -c %s "$WORK/demo/report/report.pdf") bytes), \
report.html, metrics.json parses"
else
    fail "demo --quick" "$WORK/demo.log"
fi

# 5. the workbench starts (offscreen): still running when timeout kills it = success
timeout 20 "${NET[@]}" env QT_QPA_PLATFORM=offscreen "$EXE" gui >"$WORK/gui.log" 2>&1
rc=$?
if [ $rc -eq 124 ] && clean_log gui; then
    pass "gui: still running after 20 s, no traceback"
else
    fail "gui (exit $rc; 124 expected)" "$WORK/gui.log"
fi

# 6. formula-driven pretraining (no data at all)
if run pretrain 600 pretrain --formula contours --formula-classes 4 --formula-per-class 4 \
    --model vit_test_tiny --img-size 32 --epochs 1 --device cpu --out "$WORK/f" \
    && clean_log pretrain && [ -s "$WORK/f/encoder.safetensors" ] \
    && jq -e . "$WORK/f/card.json" >/dev/null; then
    pass "pretrain --formula: encoder.safetensors + card.json"
else
    fail "pretrain --formula" "$WORK/pretrain.log"
fi

echo "bundle: $(du -sh "$BUNDLE" | cut -f1)  failed checks: $FAILED"
exit "$FAILED"
