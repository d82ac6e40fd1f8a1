"""Turn ReportData into renderer-neutral sections (text, tables, figures).

HTML and PDF render the same sections, so both say the same thing; missing
results simply produce no section.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from vitdesk.report import figures
from vitdesk.report.data import ReportData, plain

ATTENTION_PER_PAGE = 8
FIG_DPI = 120


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Section:
    """One report section; ``figures`` are factories so nothing is drawn twice needlessly."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Callable[[], Figure]] = field(default_factory=list)
    images: list[tuple[np.ndarray, str]] = field(default_factory=list)  # raw RGB + caption
    _pngs: list[bytes] | None = field(default=None, repr=False)

    def pngs(self) -> list[bytes]:
        """The figures as PNG bytes, drawn once and shared by the HTML and PDF renderers."""
        if self._pngs is None:
            self._pngs = [figures.to_png(make(), dpi=FIG_DPI) for make in self.figures]
        return self._pngs


def fmt(v: object, digits: int = 3) -> str:
    """Number formatting that shows NaN/None as an en dash."""
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    return "–" if not math.isfinite(f) else f"{f:.{digits}f}"


def fmt_ci(e: dict | None) -> str:
    """"value (lo–hi)" of an Estimate dict."""
    if not e:
        return "–"
    if not math.isfinite(float(e.get("lo", float("nan")))):
        return fmt(e.get("value"))
    return f"{fmt(e['value'])} ({fmt(e['lo'])}–{fmt(e['hi'])})"


def _model_section(data: ReportData) -> Section:
    s = Section("Model card")
    m = data.model
    if m is None:
        s.paragraphs.append("No model information was given.")
        return s
    rows = [
        ["Architecture", m.architecture],
        ["Pretrained weights", m.weights_source],
        ["Backbone provenance", m.backbone],
        ["Input size", f"{m.img_size} px" if m.img_size else ""],
        ["Windowing", m.windowing],
        ["Recipe", m.recipe],
        ["Classes", ", ".join(m.classes)],
        ["Split", m.split],
        ["Seed", "" if m.seed is None else str(m.seed)],
        ["Device", m.device],
    ]
    s.tables.append(Table(["Item", "Value"], [r for r in rows if r[1]], "Model and run"))
    if m.stages:
        keys = list(dict.fromkeys(k for st in m.stages for k in st))
        s.tables.append(Table([k.replace("_", " ") for k in keys],
                              [[fmt(st.get(k)) if not isinstance(st.get(k), str)
                                else st[k] for k in keys] for st in m.stages], "Stage plan"))
    if m.data_sizes or m.patients:
        splits = list(dict.fromkeys([*m.data_sizes, *m.patients]))
        s.tables.append(Table(["Split", "Slices", "Patients"],
                              [[k, fmt(m.data_sizes.get(k)), fmt(m.patients.get(k))]
                               for k in splits], "Data"))
    if m.software:
        s.tables.append(Table(["Package", "Version"], [[k, v] for k, v in m.software.items()],
                              "Software"))
    return s


def _training_section(history: list[dict]) -> Section:
    s = Section("Training")
    s.paragraphs.append(f"{len(history)} epochs over "
                        f"{len({r.get('stage') for r in history})} stage(s). Dashed lines "
                        "mark stage changes.")
    s.figures.append(lambda: figures.training_curves(history))
    s.tables.append(Table(
        ["stage", "epoch", "train loss", "val loss", "val acc", "lr"],
        [[str(r.get("stage", "")), str(r.get("epoch", "")), fmt(r.get("train_loss")),
          fmt(r.get("val_loss")), fmt(r.get("val_acc")), fmt(r.get("lr"), 6)]
         for r in (history if len(history) <= 12 else [*history[:6], *history[-6:]])],
        "Epochs" + (" (first and last six)" if len(history) > 12 else ""),
    ))
    return s


def level_table(level: dict, title: str, tta: str = "") -> Table:
    """One level's metrics table; accuracy-like rows name their decision cut (and
    ``tta``, e.g. "TTA off", when given), as every tab of the workbench does."""
    names = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy",
             "auc": "ROC AUC", "ece": "Expected calibration error"}
    cut = level.get("cut") or ""
    # accuracy-like numbers name their decision cut and whether TTA was on
    at = f" [{cut}{', ' + tta if tta else ''}]" if cut else ""
    cut_dependent = ("accuracy", "balanced_accuracy")
    rows = [[names.get(k, k) + (at if k in cut_dependent else ""), fmt_ci(e)]
            for k, e in level["metrics"].items()]
    for cls, d in level.get("per_class", {}).items():
        rows.append([f"Sensitivity {cls}{at}", fmt_ci(d.get("sensitivity"))])
        rows.append([f"Specificity {cls}{at}", fmt_ci(d.get("specificity"))])
    return Table(["Metric", "Value (95% CI)"], rows,
                 f"{title} (n = {level['n']}" + (f"; decision {cut})" if cut else ")"))


_AGGREGATION = {  # how metrics.evaluate turned slice probabilities into a patient score
    "mean": "mean of its slice probabilities",
    "max": "its highest slice probability per abnormal class",
    "topk": "mean of its {} highest slice probabilities per abnormal class",
}


def _evaluation_section(ev: dict, tta: str = "") -> Section:
    s = Section("Evaluation")
    st = ev.get("settings", {})
    s.paragraphs.append(
        f"Intervals: {st.get('ci', 'bootstrap')}, {st.get('n_boot', '?')} resamples of "
        f"{st.get('resampling', 'cases')}, seed {st.get('seed', '?')}. Patient score = "
        f"{_AGGREGATION.get(st.get('patient_score', 'mean'), 'mean').format(st.get('topk', 3))}"
        f"; patient label by the '{st.get('rule', 'majority')}' rule.")
    s.tables.append(level_table(ev["slice"], "Slice level", tta))
    if ev.get("patient"):
        s.tables.append(level_table(ev["patient"], "Patient level", tta))
    lvl = ev["slice"]
    cal = lvl.get("calibration", {})
    s.figures.append(lambda: figures.confusion_and_reliability(
        lvl["confusion"], ev["classes"], cal.get("bins", []), cal.get("ece")))
    return s


def _extra_section(data: ReportData) -> Section | None:
    s = Section("Test-time augmentation, transfer and distribution shift")
    if data.tta:
        t = data.tta
        rows = [["Views", f"{t.get('n_views')} ({', '.join(t.get('views', []))})"],
                ["Slice accuracy without TTA [argmax]", fmt(t.get("accuracy_plain"))],
                ["Slice accuracy with TTA [argmax]", fmt(t.get("accuracy_tta"))],
                ["Predictions changed by TTA", f"{t.get('changed')} of {t.get('n')}"],
                ["Mean uncertainty (std across views)", fmt(t.get("mean_uncertainty"))],
                ["Mean predictive entropy (nats)", fmt(t.get("mean_entropy"))]]
        s.tables.append(Table(["TTA", ""], rows, "Test-time augmentation"))
    if data.transfer:
        t = data.transfer
        fc, bc = t.get("finetuned_curve", {}), t.get("baseline_curve", {})
        rows = []
        if t.get("baseline_model"):
            rows += [["This run", t.get("model", "")], ["Baseline run", t["baseline_model"]],
                     ["Compared on", f"the same {t.get('n_slices')} slices of "
                                     f"{t.get('n_patients')} patients"]]
        rows += [["Fine-tuned slice accuracy [argmax]", fmt(t.get("accuracy"))],
                 ["Baseline slice accuracy [argmax]", fmt(t.get("baseline_accuracy"))],
                 ["Absolute improvement", fmt(t.get("absolute_improvement"))]]
        paired = t.get("paired") or {}
        for key, label in (("accuracy", "accuracy"), ("auc", "ROC AUC"),
                           ("patient_auc", "patient ROC AUC")):
            e = paired.get(key)
            if e:
                rows.append([f"Paired {label} difference, run - baseline (95% CI)",
                             f"{fmt(e.get('value'))} ({fmt(e.get('lo'))} to {fmt(e.get('hi'))})"])
        if t.get("auc") is not None:
            rows.append(["Slice ROC AUC (run / baseline)",
                         f"{fmt(t.get('auc'))} / {fmt(t.get('baseline_auc'))}"])
        if t.get("patient_auc") is not None:
            rows.append(["Patient ROC AUC (run / baseline)",
                         f"{fmt(t.get('patient_auc'))} / {fmt(t.get('baseline_patient_auc'))}"])
        rows += [
                 ["Gain over chance (acc-chance)/(base-chance)", fmt(t.get("gain_over_chance"))],
                 ["Relative error reduction (acc-base)/(1-base)",
                  fmt(t.get("relative_error_reduction"))],
                 ["Epoch reaching 95% of best (fine-tuned / baseline)",
                  f"{fmt(fc.get('epoch_to_fraction'))} / {fmt(bc.get('epoch_to_fraction'))}"],
                 ["Overfitting onset (fine-tuned / baseline)",
                  f"{fmt(fc.get('overfit_onset'))} / {fmt(bc.get('overfit_onset'))}"]]
        s.tables.append(Table(["Transfer", ""], rows, "Transfer effectiveness"))
    if data.shift is not None:
        from vitdesk.analysis.shift import reference_size

        sh = plain(data.shift)
        ref = sh.get("reference") or "held-out"
        n_ref = sh.get("n_reference")
        rows = [["Cases checked", fmt(sh.get("n"))],
                [f"Threshold ({fmt(sh.get('percentile'), 0)}th pct of {ref} distances"
                 + (f", {reference_size(n_ref, sh.get('n_reference_patients') or 0)})"
                    if n_ref else ")"), fmt(sh.get("threshold"))],
                ["Alarm rate: expected on in-distribution data",
                 fmt(sh.get("expected_rate", 1 - float(sh.get("percentile", 95)) / 100))],
                ["Alarm rate: observed (share beyond threshold)", fmt(sh.get("fraction_above"))],
                ["AUROC, these cases vs held-out in-distribution (0.5: no shift)",
                 fmt(sh.get("auroc"))],
                ["Median distance / held-out median", fmt(sh.get("median_ratio"))],
                ["Outlier cases", fmt(sh.get("n_outliers"))]]
        s.tables.append(Table(["Shift check", ""], rows,
                              "Distribution shift (Mahalanobis distance of features)"))
        frac = float(sh.get("fraction_above", 0) or 0)
        expected = 1 - float(sh.get("percentile", 95)) / 100
        if frac > 2 * expected + 0.05:
            s.paragraphs.append(
                f"Warning: {frac:.0%} of cases lie beyond the shift threshold (about "
                f"{expected:.0%} expected): these data may differ from the training data.")
    return s if s.tables else None


def sites_section(data: ReportData) -> Section | None:
    """Forgetting of a continued run and source/target accuracy of an adapted run."""
    s = Section("Learning across sites and over time")
    c = data.continual
    if c and "forgetting" in c:
        lo, hi = (c.get("forgetting_ci") or [None, None])[:2]
        rows = [["Parent run", str(c.get("parent", ""))],
                ["Scored on", f"the parent's {c.get('split', 'test')} split: "
                              f"{c.get('n_slices')} slices of {c.get('n_patients')} patients"],
                ["Parent's accuracy there [argmax]", fmt(c.get("parent_acc"))],
                ["This run's accuracy there [argmax]", fmt(c.get("run_acc"))],
                ["Forgetting, parent - this run (95% CI, patient bootstrap)",
                 f"{fmt(c.get('forgetting'))} ({fmt(lo)} to {fmt(hi)})"]]
        s.tables.append(Table(["Continual fine-tuning", ""], rows,
                              "Forgetting: the drop on the earlier data's test split"))
    elif c and c.get("note"):
        s.paragraphs.append(f"Continued from parent run {c.get('parent', '?')}; forgetting "
                            f"not measured: {c['note']}")
    a = data.adapt
    if a and ("source_test_acc" in a or "target_acc" in a):
        rows = [["Target slices adapted on", fmt(a.get("target_slices"))],
                ["Adaptation weight", fmt(a.get("weight"), 2)],
                ["Source test accuracy [argmax]", fmt(a.get("source_test_acc"))],
                ["Target accuracy [argmax]", fmt(a.get("target_acc"))]]
        if a.get("target_patients") is not None:
            rows.insert(1, ["Target patients", fmt(a.get("target_patients"))])
        note = a.get("target_note") or ""
        s.tables.append(Table(["Adaptation (DANN)", ""], rows,
                              "Source and target accuracy at the end of training"
                              + (f"; target {note}" if note else "")
                              + "; target labels used for this figure only"))
    return s if s.tables or s.paragraphs else None


def _calibration_section(c: dict) -> Section:
    s = Section("Calibration (temperature scaling)")
    if not c.get("fitted"):
        s.paragraphs.append("Probabilities are not calibrated: the run's validation slices "
                            "were not available to fit a temperature on.")
    elif c.get("applied") is False:
        s.paragraphs.append(
            f"Probabilities are not rescaled: a temperature fitted on the run's validation "
            f"slices (n = {fmt(c.get('n_fit'))}, T = {fmt(c.get('fitted_temperature'))}) made "
            f"held-out validation patients' probabilities worse in a {fmt(c.get('cv_folds'))}"
            f"-fold patient cross-validation (NLL {fmt(c.get('cv_nll_fitted'))} against "
            f"{fmt(c.get('cv_nll_identity'))} unscaled), so it is not applied.")
    else:
        s.paragraphs.append(
            f"Probabilities are divided in logit space by one temperature, fitted on the "
            f"run's {c.get('fitted_on') or 'validation slices'} (n = {fmt(c.get('n_fit'))}) "
            "by minimising the negative log-likelihood; it never changes which class is most "
            "probable, so accuracy at argmax and the robustness curves are unaffected. "
            "Every probability in this report is calibrated.")
    s.tables.append(Table(["Calibration", ""], [
        ["Temperature", fmt(c.get("temperature"))],
        [f"Slice ECE before (evaluated slices, n = {fmt(c.get('n'))})", fmt(c.get("ece_before"))],
        ["Slice ECE after", fmt(c.get("ece_after"))],
        ["Validation ECE before / after (fit)",
         f"{fmt(c.get('fit_ece_before'))} / {fmt(c.get('fit_ece_after'))}"]],
        "Expected calibration error (top label, 10 equal-width bins)"))
    if c.get("bins_before") and c.get("bins_after"):
        s.figures.append(lambda: figures.reliability_before_after(
            c["bins_before"], c["bins_after"], c.get("ece_before"), c.get("ece_after")))
    return s


def _value_ci(d: dict, key: str) -> str:
    """fmt_ci of ``d[key]`` with its interval in ``d[key + "_ci"]`` ([lo, hi], maybe null)."""
    lo, hi = (list(d.get(f"{key}_ci") or []) + [None, None])[:2]
    nan = float("nan")
    return fmt_ci({"value": d.get(key), "lo": nan if lo is None else lo,
                   "hi": nan if hi is None else hi})


def _conformal_section(c: dict) -> Section:
    s = Section("Conformal prediction sets (refer when unsure)")
    alpha = float(c.get("alpha") or 0.1)
    s.paragraphs.append(
        f"Each slice gets the set of classes that holds its true class with probability at "
        f"least {1 - alpha:.0%} ({str(c.get('method', '')).upper()} split-conformal sets, "
        f"calibrated on {fmt(c.get('n_calibration'))} validation slices of patients the "
        "model was not trained on). A slice whose set is not exactly one class is "
        "'refer': the model cannot decide it at this error rate and a reader should. The "
        "guarantee is on average over slices exchangeable with the validation ones; "
        "a shifted data set (see the shift check) may not be.")
    if c.get("quantile") is None:
        s.paragraphs.append(f"Too few validation slices to reach {1 - alpha:.0%}: every "
                            "set holds every class and every slice is referred.")
    ci = c.get("ci", "bootstrap")
    s.tables.append(Table(["Prediction sets", f"Value (95% CI, {ci})"], [
        ["Target coverage (1 - alpha)", fmt(1 - alpha)],
        ["Empirical coverage (true class in the set)", _value_ci(c, "coverage")],
        ["Refer rate (set not exactly one class)", _value_ci(c, "refer_rate")],
        ["Mean set size", fmt(c.get("mean_set_size"))],
        ["Empty sets", fmt(c.get("empty_sets"))],
        ["Slices scored", fmt(c.get("n"))]], "Split-conformal prediction sets"))
    return s


def _fairness_sections(reports: list[dict]) -> list[Section]:
    out = []
    for r in reports:
        s = Section(f"Fairness: {r['attribute']} ({r['positive']} vs rest)")
        rows = []
        for g in r["rows"]:
            m = g["metrics"]
            rows.append([g["group"] + (" *" if g.get("small") else ""), str(g["n"]),
                         fmt_ci(m["accuracy"]), fmt_ci(m["tpr"]), fmt_ci(m["fpr"]),
                         fmt_ci(m["positive_rate"]), fmt_ci(m["auc"])])
        s.tables.append(Table(["Group", "n", "Accuracy (slice, argmax)", "TPR", "FPR",
                               "Positive rate", "AUC"],
                              rows, f"* fewer than {r['min_group_size']} cases: unreliable"
                              if any(g.get("small") for g in r["rows"]) else "Per group"))
        d = r["disparities"]
        ci = r.get("gap_ci") or {}

        def gap_ci(key: str, ci: dict = ci) -> str:
            lo, hi = (ci.get(key) or (None, None))[:2]
            if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
                return "–"
            return f"{fmt(lo)}–{fmt(hi)}"

        gaps = [("Demographic parity difference", "demographic_parity_difference"),
                ("Demographic parity ratio", "demographic_parity_ratio"),
                ("Equalized odds difference", "equalized_odds_difference"),
                ("Accuracy gap", "accuracy_gap")]
        s.tables.append(Table(["Disparity", "Value", "95% CI"],
                              [[name, fmt(d.get(key)), gap_ci(key)] for name, key in gaps],
                              "Between groups (intervals: bootstrap of patients)"))
        s.paragraphs.extend(r.get("notes", []))
        s.figures.append(lambda r=r: figures.fairness_bars(r))
        out.append(s)
    return out


def _robustness_section(results: list[dict]) -> Section:
    s = Section("Robustness")
    s.paragraphs.append(
        "HU perturbations are applied to raw Hounsfield units before windowing. Attack "
        "strengths (FGSM, PGD) are in units of the windowed [0, 1] image (1/255 = one "
        "display grey level). Dashed line: clean accuracy.")
    sizes = sorted({int(r.get("n") or 0) for r in results} - {0})
    if sizes:
        # not the evaluation's accuracy: a smaller, class-balanced set, argmax, no TTA
        s.paragraphs.append(
            "Curves are measured on a class-balanced subset of "
            f"{' / '.join(str(n) for n in sizes)} slices (slice accuracy, argmax, TTA off), "
            "so their clean accuracy differs from the evaluation's.")
    rows = []
    for r in results:
        for c in r["curves"]:
            worst = max(c["drop"]) if c["drop"] else float("nan")
            rows.append([c["name"], ", ".join(fmt(v, 3) for v in c["strengths"]),
                         ", ".join(fmt(v, 2) for v in c["accuracy"]), fmt(worst)])
    s.tables.append(Table(["Perturbation", "Strengths", "Accuracy", "Largest drop"], rows))
    s.figures.append(lambda: figures.robustness_curves(results))
    return s


def build_sections(data: ReportData) -> list[Section]:
    """All sections for the results present in ``data`` (the model card is always there)."""
    sections = [_model_section(data)]
    if data.notes:
        sections[0].paragraphs.extend(data.notes)
    if data.history:
        sections.append(_training_section(list(data.history)))
    if data.evaluation is not None:
        from vitdesk.analysis.options import tta_words

        sections.append(_evaluation_section(plain(data.evaluation), tta_words(data.tta)))
    if data.calibration:
        sections.append(_calibration_section(dict(data.calibration)))
    if data.conformal:
        sections.append(_conformal_section(plain(data.conformal)))
    extra = _extra_section(data)
    if extra:
        sections.append(extra)
    sites = sites_section(data)
    if sites:
        sections.append(sites)
    if data.fairness:
        sections.extend(_fairness_sections([plain(r) for r in data.fairness]))
    if data.robustness:
        sections.append(_robustness_section([plain(r) for r in data.robustness]))
    if data.attention:
        samples = list(data.attention)
        pages = math.ceil(len(samples) / ATTENTION_PER_PAGE)
        for p in range(pages):
            chunk = samples[p * ATTENTION_PER_PAGE : (p + 1) * ATTENTION_PER_PAGE]
            title = "Attention" + (f" ({p + 1}/{pages})" if pages > 1 else "")
            s = Section(title, images=[(a.image, a.caption) for a in chunk])
            if p == 0:
                s.paragraphs.append("Where the model attended (attention rollout or Grad-CAM "
                                    "over the windowed slice). Bright is not a finding.")
            out_imgs = [a.image for a in chunk]
            caps = [a.caption for a in chunk]
            s.figures.append(lambda i=out_imgs, c=caps: figures.attention_grid(i, c))
            sections.append(s)
    return sections


def section_texts(sections: list[Section]) -> list[str]:
    """Every string a renderer will print (for the PHI guard)."""
    out = []
    for s in sections:
        out.append(s.title)
        out.extend(s.paragraphs)
        for t in s.tables:
            out.append(t.caption)
            out.extend(t.header)
            out.extend(c for row in t.rows for c in row)
        out.extend(c for _, c in s.images)
    return out
