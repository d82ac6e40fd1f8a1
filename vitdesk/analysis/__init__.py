"""vitdesk.analysis (no Qt): attention maps, TTA, metrics, fairness, robustness, shift.

Modules: ``attention`` (CLS attention, rollout, Grad-CAM, overlays), ``tta``
(batched test-time augmentation), ``metrics`` (bootstrap CIs, patient level,
calibration, transfer), ``fairness`` (group metrics and disparities),
``robustness`` (HU perturbations, FGSM/PGD), ``shift`` (Mahalanobis check),
``evaluation`` (a run on held-out data, driven by ``options.EvalOptions``),
``inference`` (predictions with their trust cues: calibration, conformal sets, the
shift verdict), ``predict`` (a run on new inputs) and ``run_model`` (loading a run
and batching its slices).
Import the submodules directly; this package imports nothing heavy.
"""
