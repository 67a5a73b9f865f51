"""Writes and checks a Triton model repository for a Norface model set (``norface-rt triton-repo``).

One model set becomes four Triton models (names from
:class:`~norface_rt.backends.triton_backend.TritonNames`, default ``norface``):

* ``norface_preprocess``  uint8 crops (B, S, S, C) -> network input ``face`` (B, C, S, S) float32,
  an ONNX graph generated here from the model's own config through
  :func:`norface_rt.preprocess.input_affine` (the one owner of ``(x/255 - mean)/std``), so the
  server computes exactly what every other backend does (tests compare them bit for bit);
* ``norface_normalizer`` and ``norface_classifier``: the model set's two graphs, the classifier
  with its ``geometry`` input when the config declares one
  (:func:`norface_rt.model_set.classifier_spec`);
* ``norface``: the ensemble over the three, what edges call (uint8 crops [+ geometry] in, the
  model's AU and emotion outputs out), carrying the model's config as its ``norface_config`` parameter.

The three platforms come from one template; only the line naming the platform, the model file
and the default instance kind differ:

* ``python``      -- Triton's Python backend runs each graph with ONNX Runtime
  (:mod:`norface_rt.serving.onnx_model` as ``model.py``); what the Triton server bundled in
  ``nvidia-pytriton`` can run, CPU by default;
* ``onnxruntime`` -- Triton's ONNX Runtime backend (``model.onnx``), GPU by default;
* ``tensorrt``    -- Triton's TensorRT backend (``model.plan``), GPU. Engines must be built with
  the TensorRT of the server that loads them, so the repository holds each graph's
  ``model.onnx`` beside the slot for its plan and a ``build_plans.sh`` that builds them with
  ``trtexec`` (inside the Triton container) for the batch range of the configs.

Every model batches dynamically (preferred batch sizes, a queue delay) and runs as an instance
group. :func:`validate_repository` parses every ``config.pbtxt`` with Triton's own protobuf
definitions (``model_config.proto``, as shipped in tritonclient) and checks what Triton checks on
load: names, platforms, files, the ensemble's wiring, and each graph's inputs and outputs against
its config. The writer always validates what it wrote, and first checks the model set against its
manifest (:func:`norface_rt.model_set.verify_model_set`), as every loader does.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from norface_rt.backends.triton_backend import CONFIG_PARAMETER, CROPS_NAME, TritonNames
from norface_rt.config import ModelConfig
from norface_rt.model_set import (
    CLASSIFIER_FILE,
    GEOMETRY_NAME,
    INPUT_NAME,
    NORMALIZED_NAME,
    NORMALIZER,
    NORMALIZER_FILE,
    PROBABILITY_NAMES,
    classifier_spec,
    config_diff,
    load_config,
    read_graph_config,
    verify_model_set,
)
from norface_rt.preprocess import input_affine
from norface_rt.wire.names import TRITON_MODEL

PLATFORMS: tuple[str, ...] = ("onnxruntime", "tensorrt", "python")
KINDS: tuple[str, ...] = ("cpu", "gpu")
_PLATFORM_LINE = {"python": 'backend: "python"', "onnxruntime": 'platform: "onnxruntime_onnx"',
                  "tensorrt": 'platform: "tensorrt_plan"'}
_MODEL_FILE = {"python": "model.py", "onnxruntime": "model.onnx", "tensorrt": "model.plan"}
_DEFAULT_KIND = {"python": "cpu", "onnxruntime": "gpu", "tensorrt": "gpu"}
_HEADER = "# Written by norface-rt triton-repo"
PLAN_SCRIPT = "build_plans.sh"
# ONNX IR version and opset of the generated preprocess graph: old enough for the ONNX Runtime
# and TensorRT of Triton releases from 2023 on.
_PRE_IR_VERSION = 8
_PRE_OPSET = 17


@dataclass(frozen=True)
class Tensor:
    """One tensor of a Triton model config; ``dims`` without the batch axis."""

    name: str
    dtype: str  # TYPE_UINT8 / TYPE_FP32
    dims: tuple[int, ...]

    def render(self) -> str:
        return (f'  {{\n    name: "{self.name}"\n    data_type: {self.dtype}\n'
                f'    dims: [ {", ".join(map(str, self.dims))} ]\n  }}')


@dataclass(frozen=True)
class Step:
    """One composing model: its tensors and the model-set graph it runs (None: generated)."""

    model: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    source: str | None


@dataclass
class RepositoryOptions:
    """How the repository serves the model (the ``norface-rt triton-repo`` options)."""

    platform: str = "python"
    name: str = TRITON_MODEL
    max_batch: int = 32
    preferred_batch: Sequence[int] = (8, 16, 32)
    queue_delay_us: int = 1000
    instances: int = 1
    kind: str | None = None  # None: cpu for python, gpu for onnxruntime / tensorrt
    threads: int = 0  # python platform: ONNX Runtime threads per instance (0: all cores)
    # Requests a model queues before it refuses more (UNAVAILABLE, which edges retry with
    # backoff): an overloaded server sheds load instead of growing its queue. 0: unbounded.
    max_queue_size: int = 0
    force: bool = False
    preferred: tuple[int, ...] = field(init=False, default=())

    def validate(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"--platform must be one of {list(PLATFORMS)}, got {self.platform!r}")
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ValueError(f"--name must be letters, digits, '_' or '-', got {self.name!r}")
        if not 1 <= self.max_batch <= 4096:
            raise ValueError(f"--max-batch must be in [1, 4096], got {self.max_batch}")
        pref = tuple(sorted({int(p) for p in self.preferred_batch if int(p) <= self.max_batch}))
        bad = [p for p in self.preferred_batch if not 1 <= int(p)]
        if bad or not pref:
            raise ValueError(f"--preferred-batch must be sizes in [1, --max-batch={self.max_batch}], "
                             f"got {list(self.preferred_batch)}")
        self.preferred = pref
        if not 0 <= self.queue_delay_us <= 10_000_000:
            raise ValueError(f"--queue-delay-us must be in [0, 10000000], got {self.queue_delay_us}")
        if not 1 <= self.instances <= 64:
            raise ValueError(f"--instances must be in [1, 64], got {self.instances}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.platform == "tensorrt" and self.kind == "cpu":
            raise ValueError("--kind cpu: TensorRT plans run on a GPU only (use --platform "
                             "onnxruntime or python for CPU instances)")
        if not 0 <= self.max_queue_size <= 1_000_000:
            raise ValueError(f"--max-queue-size must be in [0, 1000000], got {self.max_queue_size}")
        if not 0 <= self.threads <= 256:
            raise ValueError(f"--threads must be in [0, 256], got {self.threads}")

    @property
    def instance_kind(self) -> str:
        return self.kind or _DEFAULT_KIND[self.platform]


def steps_for(cfg: ModelConfig, names: TritonNames) -> tuple[Step, Step, Step]:
    """The three composing models of a model with this config, in execution order."""
    s, c = cfg.img_size, cfg.in_chans
    image = (c, s, s)
    face = Tensor(INPUT_NAME, "TYPE_FP32", image)
    normalized = Tensor(NORMALIZED_NAME, "TYPE_FP32", image)
    sizes = {"au_prob": len(cfg.au_names), "au_intensity": len(cfg.au_names),
             "emotion_prob": len(cfg.emotion_names)}
    probs = tuple(Tensor(n, "TYPE_FP32", (sizes[n],)) for n in PROBABILITY_NAMES)
    spec = classifier_spec(cfg)
    by_name = {INPUT_NAME: face, NORMALIZED_NAME: normalized,
               GEOMETRY_NAME: Tensor(GEOMETRY_NAME, "TYPE_FP32", (cfg.geometry_dim,))}
    return (
        Step(names.preprocess, (Tensor(CROPS_NAME, "TYPE_UINT8", (s, s, c)),), (face,), None),
        Step(names.normalizer, tuple(by_name[n] for n in NORMALIZER.inputs), (normalized,),
             NORMALIZER_FILE),
        Step(names.classifier, tuple(by_name[n] for n in spec.inputs), probs, CLASSIFIER_FILE),
    )


def ensemble_io(cfg: ModelConfig) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """The ensemble's inputs (crops [, geometry]) and outputs (the probabilities). The normalized
    face is no ensemble output: Triton 2.51 prunes the normalizer step when a client leaves that
    output out and then finds the classifier's input missing (edges ask for it through the
    normalizer model itself)."""
    s, c = cfg.img_size, cfg.in_chans
    ins = [Tensor(CROPS_NAME, "TYPE_UINT8", (s, s, c))]
    if cfg.geometry_dim:
        ins.append(Tensor(GEOMETRY_NAME, "TYPE_FP32", (cfg.geometry_dim,)))
    return tuple(ins), steps_for(cfg, TritonNames())[2].outputs


def _tensors(tensors: Sequence[Tensor]) -> str:
    sep = ",\n"
    return sep.join(t.render() for t in tensors)


def _escape(text: str) -> str:
    from google.protobuf import text_encoding

    return text_encoding.CEscape(text, as_utf8=True)


def render_model_config(step: Step, cfg: ModelConfig, opts: RepositoryOptions) -> str:
    """config.pbtxt of one composing model (the one template of all three platforms)."""
    kind = "KIND_GPU" if opts.instance_kind == "gpu" else "KIND_CPU"
    queue = (f"  default_queue_policy {{ max_queue_size: {opts.max_queue_size} }}\n"
             if opts.max_queue_size else "")
    params = ""
    if opts.platform == "python":
        params = ("\n".join(
            f'parameters {{\n  key: "{k}"\n  value: {{ string_value: "{v}" }}\n}}'
            for k, v in (("onnx_file", "model.onnx"), ("intra_op_threads", str(opts.threads)))) + "\n")
    return (
        f"{_HEADER} for model {_escape(cfg.model_id)}, platform {opts.platform}: re-run it rather "
        "than editing (names, shapes and preprocessing come from the model's config).\n"
        f'name: "{step.model}"\n'
        f"{_PLATFORM_LINE[opts.platform]}\n"
        f"max_batch_size: {opts.max_batch}\n"
        f'default_model_filename: "{_MODEL_FILE[opts.platform]}"\n'
        f"input [\n{_tensors(step.inputs)}\n]\n"
        f"output [\n{_tensors(step.outputs)}\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(map(str, opts.preferred))} ]\n"
        f"  max_queue_delay_microseconds: {opts.queue_delay_us}\n"
        f"{queue}"
        "}\n"
        f"instance_group [\n  {{\n    count: {opts.instances}\n    kind: {kind}\n  }}\n]\n"
        f"{params}")


def render_ensemble_config(cfg: ModelConfig, names: TritonNames, opts: RepositoryOptions) -> str:
    """config.pbtxt of the ensemble: crops -> preprocess -> normalizer -> classifier."""
    ins, outs = ensemble_io(cfg)
    step_text = []
    for step in steps_for(cfg, names):
        imap = "".join(f'      input_map {{ key: "{t.name}" value: "{t.name}" }}\n'
                       for t in step.inputs)
        omap = "".join(f'      output_map {{ key: "{t.name}" value: "{t.name}" }}\n'
                       for t in step.outputs)
        step_text.append(f'    {{\n      model_name: "{step.model}"\n      model_version: -1\n'
                         f"{imap}{omap}    }}")
    compact = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"))
    steps = ",\n".join(step_text)
    return (
        f"{_HEADER} for model {_escape(cfg.model_id)}: the ensemble edges call.\n"
        f'name: "{names.ensemble}"\n'
        'platform: "ensemble"\n'
        f"max_batch_size: {opts.max_batch}\n"
        f"input [\n{_tensors(ins)}\n]\n"
        f"output [\n{_tensors(outs)}\n]\n"
        f"ensemble_scheduling {{\n  step [\n{steps}\n  ]\n}}\n"
        f'parameters {{\n  key: "{CONFIG_PARAMETER}"\n'
        f'  value: {{ string_value: "{_escape(compact)}" }}\n}}\n')


def preprocess_graph(cfg: ModelConfig) -> bytes:
    """The serialized ONNX graph of :func:`norface_rt.preprocess.preprocess` for this config:
    uint8 (B, S, S, C) -> Cast -> Transpose to (B, C, S, S) -> ``* scale + shift``, with the
    constants of :func:`~norface_rt.preprocess.input_affine` (the same float32 arithmetic)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scale, shift = input_affine(cfg.mean, cfg.std)
    c, s = cfg.in_chans, cfg.img_size
    nodes = [
        helper.make_node("Cast", [CROPS_NAME], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], [INPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes, "norface_preprocess",
        [helper.make_tensor_value_info(CROPS_NAME, TensorProto.UINT8, ["batch", s, s, c])],
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", c, s, s])],
        initializer=[numpy_helper.from_array(scale.reshape(1, c, 1, 1), "scale"),
                     numpy_helper.from_array(shift.reshape(1, c, 1, 1), "shift")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _PRE_OPSET)],
                              producer_name="norface-rt triton-repo")
    model.ir_version = _PRE_IR_VERSION
    helper.set_model_props(model, {CONFIG_PARAMETER: cfg.to_json(), "norface_model_id": cfg.model_id,
                                   "norface_trained": str(cfg.trained).lower()})
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _plan_script(cfg: ModelConfig, names: TritonNames, opts: RepositoryOptions) -> str:
    lines = ["#!/usr/bin/env bash",
             "# Builds each model's TensorRT plan from the model.onnx beside it. Run it where the",
             "# server runs (inside the Triton container: trtexec and the server's TensorRT), from",
             "# this folder; a plan only loads on the TensorRT version and GPU kind it was built on.",
             "set -euo pipefail", 'cd "$(dirname "$0")"',
             'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"']
    opt_b = max(p for p in opts.preferred)
    for step in steps_for(cfg, names):
        shapes = {which: ",".join(f"{t.name}:{b}x{'x'.join(map(str, t.dims))}" for t in step.inputs)
                  for which, b in (("min", 1), ("opt", opt_b), ("max", opts.max_batch))}
        precision = "" if step.source is None else " --fp16"
        lines.append(f'"$TRTEXEC" --onnx={step.model}/1/model.onnx '
                     f"--saveEngine={step.model}/1/model.plan{precision} "
                     f"--minShapes={shapes['min']} --optShapes={shapes['opt']} "
                     f"--maxShapes={shapes['max']}")
    return "\n".join(lines) + "\n"


def write_repository(out: str | os.PathLike[str], model_dir: str | os.PathLike[str],
                     opts: RepositoryOptions | None = None) -> list[str]:
    """Write the four models of ``model_dir`` into repository ``out`` and validate them; returns
    the validation notes (things left to do, such as building TensorRT plans).

    Other models already in ``out`` are left alone; the four of this name are replaced when
    they were written by this command (anything else there needs ``force``)."""
    from norface_rt.extras import require

    require("triton", "norface-rt triton-repo")
    opts = opts or RepositoryOptions()
    opts.validate()
    src = Path(model_dir)
    if src.is_dir():  # the graphs served are the set's own: refuse damaged or altered files
        verify_model_set(src)
    cfg = load_config(src)
    for graph in (NORMALIZER_FILE, CLASSIFIER_FILE):
        if not (src / graph).is_file():
            raise FileNotFoundError(f"--model-dir {src} lacks {graph} (a model set written before "
                                    "v0.2 with only norface.onnx cannot be served: re-export it)")
        embedded = read_graph_config(src / graph)
        if embedded != cfg:
            raise ValueError(f"{src / graph} disagrees with {src}/config.json in fields "
                             f"{config_diff(cfg, embedded)}")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"OUT: {root} exists and is not a folder")
    names = TritonNames(opts.name)
    steps = steps_for(cfg, names)
    for model in (names.ensemble, *(s.model for s in steps)):
        d = root / model
        if d.exists():
            ours = (d / "config.pbtxt").is_file() and \
                (d / "config.pbtxt").read_text(errors="replace").startswith(_HEADER)
            if not ours and not opts.force:
                raise ValueError(f"OUT: {d} exists and was not written by norface-rt triton-repo "
                                 "(pass --force to replace it)")
            shutil.rmtree(d)
    # Copied as a file: importing it here would need the server's triton_python_backend_utils.
    runner = Path(__file__).with_name("onnx_model.py")
    for step in steps:
        vdir = root / step.model / "1"
        vdir.mkdir(parents=True)
        (root / step.model / "config.pbtxt").write_text(render_model_config(step, cfg, opts))
        if step.source is None:
            (vdir / "model.onnx").write_bytes(preprocess_graph(cfg))
        else:
            shutil.copyfile(src / step.source, vdir / "model.onnx")
        if opts.platform == "python":
            shutil.copyfile(runner, vdir / "model.py")
    (root / names.ensemble / "1").mkdir(parents=True)
    (root / names.ensemble / "config.pbtxt").write_text(render_ensemble_config(cfg, names, opts))
    if opts.platform == "tensorrt":
        script = root / PLAN_SCRIPT
        script.write_text(_plan_script(cfg, names, opts))
        script.chmod(0o755)
    return validate_repository(root, opts.name)


# ------------------------------------------------------------------ validation
def parse_model_config(path: str | os.PathLike[str]) -> Any:
    """Parse one config.pbtxt with Triton's ``model_config.proto`` (tritonclient's generated
    module); ValueError names the file and the parser's line and column."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    p = Path(path)
    msg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(p.read_text(), msg)
    except text_format.ParseError as e:
        raise ValueError(f"{p}: not a valid Triton model config: {e}") from e
    return msg


_DTYPES = {"TYPE_UINT8": "tensor(uint8)", "TYPE_FP32": "tensor(float)"}


def _check_graph(mc: Any, onnx_path: Path, problems: list[str]) -> None:
    """The graph's inputs/outputs against the config: names, element types, non-batch dims."""
    import onnxruntime as ort
    from tritonclient.grpc import model_config_pb2

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    graph = {a.name: a for a in (*sess.get_inputs(), *sess.get_outputs())}
    declared = [*mc.input, *mc.output]
    for t in declared:
        a = graph.get(t.name)
        dtype = model_config_pb2.DataType.Name(t.data_type)
        if a is None:
            problems.append(f"{onnx_path}: has no tensor {t.name!r} (it has {sorted(graph)})")
            continue
        if _DTYPES.get(dtype) != a.type:
            problems.append(f"{onnx_path}: {t.name} is {a.type}, the config says {dtype}")
        if [int(d) for d in t.dims] != list(a.shape[1:]):
            problems.append(f"{onnx_path}: {t.name} has dims {list(a.shape[1:])} after the batch "
                            f"axis, the config says {list(t.dims)}")
    if len(declared) != len(graph):
        problems.append(f"{onnx_path}: graph tensors {sorted(graph)} but the config declares "
                        f"{sorted(t.name for t in declared)}")


def validate_repository(repo: str | os.PathLike[str], name: str = TRITON_MODEL) -> list[str]:
    """Check the four models of ``name`` in ``repo`` the way Triton does when it loads them;
    raises ValueError listing every problem, returns notes (e.g. TensorRT plans still to build)."""
    root = Path(repo)
    names = TritonNames(name)
    problems: list[str] = []
    notes: list[str] = []
    configs: dict[str, Any] = {}
    for model in (names.ensemble, names.preprocess, names.normalizer, names.classifier):
        p = root / model / "config.pbtxt"
        if not p.is_file():
            problems.append(f"{p}: missing")
            continue
        mc = parse_model_config(p)
        configs[model] = mc
        if mc.name != model:
            problems.append(f"{p}: name is {mc.name!r}, expected the folder name {model!r}")
        if not (root / model / "1").is_dir():
            problems.append(f"{root / model}: no version folder 1/")
    if problems:
        raise ValueError("invalid Triton repository:\n  " + "\n  ".join(problems))
    ens = configs[names.ensemble]
    if ens.platform != "ensemble":
        problems.append(f"{names.ensemble}: platform {ens.platform!r}, expected 'ensemble'")
    # The wiring: every step input is an ensemble input or an earlier step's output, every step
    # model's own inputs/outputs are mapped, every ensemble output is produced.
    available = {t.name for t in ens.input}
    ens_batch = int(ens.max_batch_size)
    for step in ens.ensemble_scheduling.step:
        mc = configs.get(step.model_name)
        if mc is None:
            problems.append(f"ensemble step {step.model_name!r} is not one of this repository's models")
            continue
        m_in = {t.name for t in mc.input}
        m_out = {t.name for t in mc.output}
        if set(step.input_map) != m_in:
            problems.append(f"ensemble step {step.model_name}: maps inputs {sorted(step.input_map)}, "
                            f"the model has {sorted(m_in)}")
        missing = [v for v in step.input_map.values() if v not in available]
        if missing:
            problems.append(f"ensemble step {step.model_name}: {missing} not produced before it")
        if not set(step.output_map) <= m_out:
            problems.append(f"ensemble step {step.model_name}: maps outputs {sorted(step.output_map)}"
                            f", the model has {sorted(m_out)}")
        available.update(step.output_map.values())
        if int(mc.max_batch_size) < ens_batch:
            problems.append(f"{step.model_name}: max_batch_size {mc.max_batch_size} < "
                            f"the ensemble's {ens_batch}")
    produced = [t.name for t in ens.output if t.name not in available]
    if produced:
        problems.append(f"ensemble outputs {produced} are produced by no step")
    for model in (names.preprocess, names.normalizer, names.classifier):
        mc = configs[model]
        vdir = root / model / "1"
        backend, platform = mc.backend, mc.platform
        db = mc.dynamic_batching
        if not mc.HasField("dynamic_batching") or not len(db.preferred_batch_size):
            problems.append(f"{model}: no dynamic batching with preferred batch sizes")
        elif max(db.preferred_batch_size) > int(mc.max_batch_size):
            problems.append(f"{model}: preferred batch sizes {list(db.preferred_batch_size)} exceed "
                            f"max_batch_size {mc.max_batch_size}")
        if not len(mc.instance_group):
            problems.append(f"{model}: no instance group")
        if backend == "python":
            needed = ["model.py", "model.onnx"]
        elif platform == "onnxruntime_onnx":
            needed = ["model.onnx"]
        elif platform == "tensorrt_plan":
            needed = ["model.onnx"]
            if not (vdir / "model.plan").is_file():
                notes.append(f"{vdir / 'model.plan'}: not built yet (run {root / PLAN_SCRIPT} "
                             "where the server runs)")
        else:
            problems.append(f"{model}: backend {backend!r} / platform {platform!r} is none of "
                            f"{list(PLATFORMS)}")
            continue
        lacking = [f for f in needed if not (vdir / f).is_file()]
        if lacking:
            problems.append(f"{vdir}: lacks {lacking}")
            continue
        _check_graph(mc, vdir / "model.onnx", problems)
    if CONFIG_PARAMETER not in ens.parameters:
        problems.append(f"{names.ensemble}: no {CONFIG_PARAMETER!r} parameter")
    else:
        try:
            ModelConfig.from_json(ens.parameters[CONFIG_PARAMETER].string_value)
        except ValueError as e:
            problems.append(f"{names.ensemble}: parameter {CONFIG_PARAMETER!r} is no model config: {e}")
    if problems:
        raise ValueError("invalid Triton repository:\n  " + "\n  ".join(problems))
    return notes
