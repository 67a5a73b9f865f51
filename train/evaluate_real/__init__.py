"""Label-free quality of a Norface model set on real faces, for the model card.

Real video has no AU labels we may use, so two independent yardsticks stand in for them. Both run
the serving path itself (``norface_rt`` sources -> :class:`~norface_rt.faces.stage.FaceStage` ->
:func:`~norface_rt.backends.load_backend`), with the landmarker settings ``create_pipeline`` uses,
so what is measured is what users get.

Yardstick 1, AUs against MediaPipe: MediaPipe's FaceLandmarker also predicts 52 ARKit-style
blendshapes, from a separate network trained on real faces. They are turned into reference AU
intensities through the very rules that label the synthetic training data
(:class:`train.synth.labels.AULabeler`, docs/au_mapping.md), e.g. AU12 <- 5 * max(mouthSmileLeft,
mouthSmileRight). Per AU, over all face-frames: Pearson, Spearman, ICC(3,1) and MAE between our
intensity and that reference, Spearman of our occurrence probability against it, per media file
and pooled. The reference emotion (the same EMFACS rules) gives an agreement rate as a side number.
MediaPipe is a model too, not ground truth: agreement bounds neither side's error, it shows whether
ours moves with an independent real-face estimator. Frames of a video are strongly autocorrelated,
so no p-values are given; ``n`` counts face-frames, not independent samples.

Yardstick 2, normalization fidelity: Norface re-renders each face on one target identity and must
keep the expression. MediaPipe (image mode) runs on the aligned original crop I_o and on our
normalized face I_n, both upscaled from the model's input size to ``fidelity_size`` the same way;
per blendshape, the correlation between the two over faces is the fidelity. The detection rate on
I_n says whether the render still looks like a face at all. As a ceiling, the same correlation
between the full-frame blendshapes and I_o shows how much cropping and upscaling alone cost.

A time-series plot of one video (emotions, AU intensities and their MediaPipe references) is
written too. Untrained model sets are evaluated like any other and flagged as such everywhere:
their numbers are meaningless (about 0) and only prove the tooling works.

CLI: ``python -m train evaluate-real --model-dir DIR --media PATH... --out DIR``.

Labelled real faces are scored through the same serving path: folder-per-emotion sets
(``--labelled``: accuracy, balanced accuracy, per-class recall, confusion matrix, AU-pattern AUCs
beside MediaPipe's), the London set's held-out people (``--london``, per ethnicity, gender and age
group) and labelled video segments (``--segment``); ``--renders`` measures how far the synthetic
renders' expressions are from real ones as MediaPipe reads them; ``--side-by-side`` puts two
reports' labelled figures in one table.

Modules: :mod:`.collect` (media items and the evaluator that runs the serving path),
:mod:`.reference` (MediaPipe blendshapes -> reference AUs), :mod:`.agreement` (the label-free
yardsticks), :mod:`.scoring` (labelled scores and their undefined cases), :mod:`.labelled`
(labelled sets, London, segments), :mod:`.render_gap` (renders vs real faces), :mod:`.report`
and :mod:`.tables` (markdown, CSV, plots), :mod:`.cli` (arguments and the run).
"""

from train.evaluate_real.agreement import (
    MIN_BLEND_STD,
    MIN_PAIRS,
    MIN_REF_STD,
    Correlation,
    FaceArrays,
    au_agreement,
    blendshape_names,
    correlate,
    emotion_agreement,
    fidelity_metrics,
    summarize,
)
from train.evaluate_real.cli import (
    REPORT_VERSION,
    add_arguments,
    main,
    run,
    run_cli,
    write_side_by_side,
)
from train.evaluate_real.collect import (
    READ_TIMEOUT_S,
    VIDEO_EXTENSIONS,
    MediaItem,
    MediaKind,
    MediaRecords,
    RealEvaluator,
    StillRecords,
    expand_media,
)
from train.evaluate_real.labelled import (
    AU_PATTERNS,
    DEFAULT_CLASSES,
    LabelledSet,
    SegmentSpec,
    discover_labelled,
    london_held_out,
    parse_segment,
)
from train.evaluate_real.reference import (
    ICT_ONLY_SHAPES,
    BlendshapeReference,
    expression_blendshapes,
    ict_name,
)
from train.evaluate_real.render_gap import SUMMARY_BLENDSHAPES, render_gap
from train.evaluate_real.report import (
    PLOT_AUS,
    PREFERRED_PLOT_VIDEO,
    pick_plot_video,
    plot_confusion,
    plot_timeseries,
    render_markdown,
    write_faces_csv,
)
from train.evaluate_real.scoring import NO_FACE, auc, classification_scores, restricted_argmax
from train.evaluate_real.tables import side_by_side

__all__ = [
    "AU_PATTERNS", "DEFAULT_CLASSES", "ICT_ONLY_SHAPES", "MIN_BLEND_STD", "MIN_PAIRS",
    "MIN_REF_STD", "NO_FACE", "PLOT_AUS", "PREFERRED_PLOT_VIDEO", "READ_TIMEOUT_S",
    "REPORT_VERSION", "SUMMARY_BLENDSHAPES", "VIDEO_EXTENSIONS", "BlendshapeReference",
    "Correlation", "FaceArrays", "LabelledSet", "MediaItem", "MediaKind", "MediaRecords",
    "RealEvaluator", "SegmentSpec", "StillRecords", "add_arguments", "au_agreement", "auc",
    "blendshape_names", "classification_scores", "correlate", "discover_labelled",
    "emotion_agreement", "expand_media", "expression_blendshapes", "fidelity_metrics", "ict_name",
    "london_held_out", "main", "parse_segment", "pick_plot_video", "plot_confusion",
    "plot_timeseries", "render_gap", "render_markdown", "restricted_argmax", "run", "run_cli",
    "side_by_side", "summarize", "write_faces_csv", "write_side_by_side",
]
