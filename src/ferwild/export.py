"""ONNX export of a trained run, checked against PyTorch.

:func:`export_onnx` turns a run's ``best`` (or ``last``) checkpoint into one self-contained
``.onnx`` file: input ``pixel_values`` float32 ``(N, 3, S, S)``, already normalised as the
model's :class:`~ferwild.preprocessing.Preprocessing` says, with a dynamic batch axis; outputs
``logits`` and ``probabilities`` (softmax), both ``(N, K)``. Everything a consumer needs to use
the file without the run directory (label names, preprocessing, face alignment, the model
config, where it came from) is embedded as one JSON string under the ``"ferwild"`` key of the
model's ``metadata_props``. The file's interface (those names, the metadata format) is defined
in :mod:`ferwild.backends`, beside :class:`~ferwild.backends.OnnxClassifier` that reads it.

Errors: :class:`ExportError` (export or parity check failed) is a ``ValueError`` subclass, as
is ferwild's ``RunError`` that :func:`export_onnx` lets through for a missing or broken run; so
``except ValueError`` catches every user-facing problem. ``ExportError`` is not a ``RunError``
subclass on purpose: that would import ``ferwild.runs`` (and torch) whenever this module is
imported.

int8 twins: :func:`quantize_onnx` writes an int8 copy of an export (ONNX Runtime's static QDQ
quantisation calibrated on real crops, or dynamic quantisation without them), same interface
and metadata plus a ``"quantization"`` entry; :func:`export_int8_twin` writes it beside an
export as ``<stem>.int8.onnx``, calibrated on a prepared dataset's train crops
(:func:`calibration_crops`), which is what ``ferwild export --int8`` calls.

torch, onnx and onnxruntime.quantization are imported inside the functions that need them:
``import ferwild.export`` costs numpy only.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ferwild.backends import INPUT_NAME, METADATA_FORMAT, METADATA_KEY, OUTPUT_NAMES
from ferwild.formatting import first_line

__all__ = ["ExportError", "cached_onnx", "calibration_crops", "export_int8_twin", "export_onnx", "int8_path",
           "quantize_onnx"]

# A protobuf message (hence a single-file .onnx) cannot exceed 2 GiB; leave room for the graph.
_MAX_INLINE_BYTES = 2_000_000_000
# The export example batch: 2, not 1, so that torch.export does not specialise the batch axis
# to a constant (it treats sizes 0 and 1 as special); the parity check then runs other sizes.
_EXAMPLE_BATCH = 2


class ExportError(ValueError):
    """The export failed: both exporters raised, the graph is not what was asked for, the model
    is too large for one file, or the ONNX outputs do not match PyTorch within ``atol``."""


def _ferwild_version() -> str:
    import ferwild

    version = getattr(ferwild, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version

        return dist_version("ferwild")
    except Exception:  # noqa: BLE001 - a source checkout without installed metadata
        return "unknown"


# --------------------------------------------------------------------------------------------
# export


def _wrap(model: Any):
    """The FERModel with a second output, so consumers need not re-implement the softmax."""
    import torch
    from torch import nn

    class LogitsAndProbabilities(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, pixel_values: torch.Tensor):
            logits = self.model(pixel_values)
            return logits, torch.softmax(logits, dim=-1)

    return LogitsAndProbabilities(model).eval()


@contextmanager
def _quiet_exporter():
    """Silence the exporters' progress prints and tracer/deprecation warnings: they are noise to
    a ``ferwild`` user, and what matters (which exporter, why a fallback) goes into the report."""
    import contextlib
    import io

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _export_proto(wrapper: Any, example: Any, opset: int, scratch: Path):
    """``(ModelProto with every tensor inline, exporter name, why dynamo was not used or None)``.

    The dynamo (``torch.export``) exporter is tried first; if it raises (an op or control flow
    it cannot capture), the TorchScript exporter gets a second try with ``dynamic_axes``.
    """
    import onnx
    import torch

    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                wrapper, (example,), None, dynamo=True, opset_version=opset, verbose=False,
                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
            )
            # model_proto serialises from memory with the weights inline (writing the program
            # with .save() would put them in a side ".data" file).
            return program.model_proto, "dynamo", None
    except Exception as exc:  # noqa: BLE001 - any failure of the new exporter means: try the old one
        dynamo_error = first_line(exc)
    try:
        # The TorchScript exporter writes to a path; use a private folder beside the output (same
        # disk, removed afterwards) and read it back with any external data folded in.
        with tempfile.TemporaryDirectory(prefix=".ferwild-export-", dir=scratch) as folder:
            path = Path(folder) / "model.onnx"
            with _quiet_exporter():
                torch.onnx.export(
                    wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                    dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
                    do_constant_folding=True,
                )
            proto = onnx.load(str(path), load_external_data=True)
        return proto, "torchscript", dynamo_error
    except Exception as exc:
        raise ExportError(
            f"neither ONNX exporter could export this model: dynamo: {dynamo_error}; "
            f"torchscript: {first_line(exc)}"
        ) from exc


def _graph_io(proto: Any) -> tuple[list[str], list[str], list[Any]]:
    """Input names, output names, and the input's shape (ints, or the dim_param strings)."""
    inputs = [v.name for v in proto.graph.input]
    outputs = [v.name for v in proto.graph.output]
    shape: list[Any] = []
    if proto.graph.input:
        for dim in proto.graph.input[0].type.tensor_type.shape.dim:
            shape.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None))
    return inputs, outputs, shape


def _check_graph(proto: Any, size: int) -> list[Any]:
    """The exported graph must have exactly the promised interface, batch axis symbolic."""
    inputs, outputs, shape = _graph_io(proto)
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise ExportError(f"the exported graph has inputs {inputs} and outputs {outputs}; "
                          f"expected [{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}")
    if len(shape) != 4 or shape[1:] != [3, size, size]:
        raise ExportError(f"the exported input has shape {shape}; expected [batch, 3, {size}, {size}]")
    if isinstance(shape[0], int):
        raise ExportError(f"the exported batch axis is fixed to {shape[0]}, not dynamic")
    return shape


def _set_metadata(proto: Any, metadata: dict, doc: str) -> None:
    del_idx = [i for i, p in enumerate(proto.metadata_props) if p.key == METADATA_KEY]
    for i in reversed(del_idx):
        del proto.metadata_props[i]
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(metadata, sort_keys=False)
    proto.doc_string = doc
    proto.producer_name = "ferwild"
    proto.producer_version = metadata["ferwild_version"]


def _save_inline(proto: Any, path: Path) -> None:
    """One self-contained file (no external data), flushed to disk before it is renamed."""
    import onnx

    onnx.save_model(proto, str(path), save_as_external_data=False)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _parity(model: Any, onnx_path: Path, batch: int, atol: float) -> dict:
    """Run PyTorch and onnxruntime (CPU) on the same random batches of two sizes and compare."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    size = model.preprocessing.input_size
    # Two sizes, neither the export's example batch: a batch axis that was silently fixed, or
    # specialised to the example, fails here rather than in production.
    sizes = [batch, 1] if batch != 1 else [1, 3]
    gen = torch.Generator().manual_seed(0)
    rows, worst_logits, worst_probs, agree, total = [], 0.0, 0.0, 0, 0
    for n in sizes:
        # realistic inputs: uniform pixels in [0, 1], normalised as the model expects
        pixels = model.preprocessing.normalize(torch.rand(n, 3, size, size, generator=gen))
        with torch.no_grad():
            ref_logits = model(pixels)
            ref_probs = torch.softmax(ref_logits, dim=-1)
        ort_logits, ort_probs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixels.numpy()})
        if ort_logits.shape != tuple(ref_logits.shape) or ort_probs.shape != tuple(ref_probs.shape):
            raise ExportError(f"onnxruntime returned shapes {ort_logits.shape} / {ort_probs.shape} for a batch "
                              f"of {n}; PyTorch returns {tuple(ref_logits.shape)}")
        d_logits = float(np.max(np.abs(ort_logits - ref_logits.numpy())))
        d_probs = float(np.max(np.abs(ort_probs - ref_probs.numpy())))
        same = int((ort_logits.argmax(1) == ref_logits.numpy().argmax(1)).sum())
        rows.append({"batch": n, "max_abs_diff_logits": d_logits, "max_abs_diff_probabilities": d_probs,
                     "argmax_agreement": same / n})
        # NaN must count as the worst case, and max() with NaN depends on argument order
        worst_logits = d_logits if not d_logits <= worst_logits else worst_logits
        worst_probs = d_probs if not d_probs <= worst_probs else worst_probs
        agree, total = agree + same, total + n
    report = {"atol": atol, "batches": rows, "max_abs_diff_logits": worst_logits,
              "max_abs_diff_probabilities": worst_probs, "argmax_agreement": agree / total,
              "passed": bool(worst_probs <= atol)}
    if not report["passed"]:
        raise ExportError(
            f"ONNX and PyTorch outputs differ: max |Δprobabilities| = {worst_probs:.3g} > atol {atol:g} "
            f"(max |Δlogits| = {worst_logits:.3g}, argmax agreement {agree}/{total}); the file was not written"
        )
    return report


def export_onnx(run_dir: str | os.PathLike, out_path: str | os.PathLike, *, which: str = "best",
                opset: int = 18, check: bool = True, atol: float = 1e-4,
                batch_for_check: int = 4, tta: str | None = None) -> dict[str, Any]:
    """Export a run's ``which`` checkpoint to a single self-contained ONNX file at ``out_path``.

    The graph takes ``pixel_values`` float32 ``(N, 3, S, S)``, normalised per the model's
    preprocessing, with a dynamic ``N``, and returns ``logits`` and ``probabilities`` ``(N, K)``.
    The ``"ferwild"`` metadata entry holds label names, preprocessing, face alignment, model
    config, source run, checkpoint, epoch, versions, opset and exporter (see
    :class:`~ferwild.backends.OnnxClassifier`).

    The dynamo exporter is tried first, the TorchScript one if it raises; the report's
    ``exporter`` says which was used and ``exporter_fallback_reason`` why. The file is written
    to a temporary name beside ``out_path``, checked there, and only then renamed over
    ``out_path`` (replacing an existing file): a failed or killed export never leaves half a
    file, and a file that fails the parity check is never installed.

    With ``check``, PyTorch and onnxruntime (CPU) run on a random batch of ``batch_for_check``
    and on one of another size; the report gives the largest absolute differences of logits
    and probabilities and the argmax agreement.

    Returns a JSON-able report: path, size_bytes, opset, exporter, input/output names and
    shapes, parity (``None`` without ``check``), seconds, and what was embedded.

    Raises:
        RunError: ``run_dir`` is not a run, or has no such checkpoint (from ``load_run``).
        ExportError: bad arguments, both exporters failed, the graph lacks a dynamic batch axis,
            the model is too big for one file, or probabilities differ by more than ``atol``.

    ``tta`` overrides the checkpoint's test-time augmentation (``"none"`` / ``"flip"``; None: as trained).
    """
    t0 = time.perf_counter()
    out = Path(out_path)
    _check_arguments(which, opset, atol, batch_for_check, out)
    import onnx
    import torch

    from ferwild.runs import load_run, training_face_alignment

    model, state = load_run(run_dir, which, "cpu")  # RunError for a missing/broken run
    if tta is not None:  # e.g. "none" for live video: the flip pass doubles the cost of a face
        try:
            model.set_tta(tta)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
    n_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if n_bytes > _MAX_INLINE_BYTES:
        raise ExportError(f"the model's tensors take {n_bytes / 1e9:.2f} GB, over the 2 GB a single-file "
                          "ONNX model can hold")
    alignment, alignment_source = training_face_alignment(state)
    label_names = [str(n) for n in state["label_names"]]
    if len(label_names) != model.num_classes:
        raise ExportError(f"the checkpoint lists {len(label_names)} labels for a {model.num_classes}-way model")

    pre = model.preprocessing
    size = pre.input_size
    example = pre.normalize(torch.rand(_EXAMPLE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(1)))
    out.parent.mkdir(parents=True, exist_ok=True)
    t_export = time.perf_counter()
    proto, exporter, fallback_reason = _export_proto(_wrap(model), example, opset, out.parent)
    export_s = time.perf_counter() - t_export
    input_shape = _check_graph(proto, size)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ExportError(f"the {exporter} exporter produced an invalid ONNX model: {first_line(exc)}") from exc

    from ferwild.metrics import jsonable

    metadata = jsonable(_metadata(run_dir, which, state, model, label_names, alignment.to_dict(),
                                  alignment_source, opset, exporter))
    _set_metadata(proto, metadata, _doc_string(model, label_names))
    parity = _install_checked(proto, out, model if check else None, batch_for_check, float(atol))
    return jsonable({
        "path": str(out),
        "size_bytes": out.stat().st_size,
        "opset": opset,
        "exporter": exporter,
        "exporter_fallback_reason": fallback_reason,
        "model": model.name,
        "source_run": metadata["source_run"],
        "checkpoint": which,
        "epoch": metadata["epoch"],
        "label_names": label_names,
        "face_alignment_source": alignment_source,
        "input_name": INPUT_NAME,
        "input_shape": input_shape,
        "output_names": list(OUTPUT_NAMES),
        "parity": parity,
        "export_seconds": export_s,
        "seconds": time.perf_counter() - t0,
    })


def _check_arguments(which: str, opset: Any, atol: Any, batch_for_check: Any, out: Path) -> None:
    """:func:`export_onnx`'s arguments, refused with an :class:`ExportError` before any work."""
    if which not in ("best", "last"):
        raise ExportError(f"which must be 'best' or 'last', not {which!r}")
    import onnx

    max_opset = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 13 <= opset <= max_opset:
        raise ExportError(f"opset must be an integer in 13..{max_opset} (this onnx package's newest), not {opset!r}")
    if not (isinstance(atol, (int, float)) and atol > 0):
        raise ExportError(f"atol must be a positive number, not {atol!r}")
    if isinstance(batch_for_check, bool) or not isinstance(batch_for_check, int) or batch_for_check < 1:
        raise ExportError(f"batch_for_check must be a positive integer, not {batch_for_check!r}")
    if out.is_dir():
        raise ExportError(f"{out} is a directory; give the path of the .onnx file to write")


def _metadata(run_dir: str | os.PathLike, which: str, state: dict, model: Any, label_names: list[str],
              face_alignment: dict, alignment_source: str, opset: int, exporter: str) -> dict[str, Any]:
    """The ``"ferwild"`` metadata entry: what a consumer needs without the run directory."""
    import torch

    from ferwild.runs import checkpoint_dir, resolve_run_dir
    from ferwild.shipped import describe_run

    return {
        "format": METADATA_FORMAT,
        "label_names": label_names,
        "preprocessing": model.preprocessing.to_dict(),
        "face_alignment": face_alignment,
        "face_alignment_source": alignment_source,
        "model_config": state["model_config"],
        "source_run": str(resolve_run_dir(run_dir).resolve()),
        "description": describe_run(resolve_run_dir(run_dir), state),
        "checkpoint": which,
        "checkpoint_name": checkpoint_dir(run_dir, which).name,
        "epoch": state.get("epoch"),
        "ferwild_version": _ferwild_version(),
        "torch_version": torch.__version__,
        "opset": opset,
        "exporter": exporter,
        "input_name": INPUT_NAME,
        "output_names": list(OUTPUT_NAMES),
    }


def _doc_string(model: Any, label_names: list[str]) -> str:
    """The model's human-readable ``doc_string``: classes, input and outputs in one sentence."""
    pre = model.preprocessing
    size = pre.input_size
    return (f"ferwild {model.name} expression classifier ({len(label_names)} classes: {', '.join(label_names)}); "
            f"input {INPUT_NAME} float32 (N, 3, {size}, {size}) normalised with mean {list(pre.mean)} "
            f"std {list(pre.std)}; outputs logits, probabilities")


def _install_checked(proto: Any, out: Path, model: Any | None, batch_for_check: int, atol: float) -> dict | None:
    """Write ``proto`` beside ``out``, check it against ``model`` (None: no check), then rename
    it over ``out``; the parity report or None. A failed write or check leaves ``out`` as it was."""
    from ferwild.files import atomic_target

    tmp = atomic_target(out)
    parity = None
    try:
        _save_inline(proto, tmp)
        if model is not None:
            parity = _parity(model, tmp, batch_for_check, atol)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return parity


def cached_onnx(run_dir: str | os.PathLike, *, which: str = "best", cache_dir: str | os.PathLike | None = None,
                tta: str | None = None, log: Any = None) -> Path:
    """The ONNX export of a run's checkpoint, exported once and kept in a cache.

    Live video wants ONNX Runtime's speed (a 48 px face in ~3-4 ms on one core, several times
    PyTorch's eager call) without asking the user to run ``ferwild export`` first. The file is
    keyed by the checkpoint's bytes and ferwild's version, so a retrained run or a new release
    exports afresh. Cache folder: ``cache_dir``, else ``onnx/`` under ferwild's cache
    (:func:`ferwild.shipped.cache_root`). ``tta`` as for :func:`export_onnx`.
    """
    import hashlib

    from ferwild.runs import checkpoint_dir, resolve_run_dir
    from ferwild.shipped import cache_root

    ckpt = checkpoint_dir(resolve_run_dir(run_dir), which)
    digest = hashlib.sha256(f"{_ferwild_version()} tta={tta}".encode())
    for f in sorted(ckpt.iterdir()):
        if f.is_file():
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "onnx"
    target = root / f"{digest.hexdigest()[:24]}.onnx"
    if not target.is_file():
        if log is not None:
            log(f"exporting {run_dir} to ONNX once for ONNX Runtime speed (kept in {root})")
        root.mkdir(parents=True, exist_ok=True)
        export_onnx(run_dir, target, which=which, check=True, tta=tta)
    return target


# --------------------------------------------------------------------------------------------
# int8 twins

#: How ``quantize_onnx`` can quantise: ``static`` (QDQ, calibrated on crops) or ``dynamic``.
QUANT_MODES = ("static", "dynamic")
#: Static calibration methods. Percentile (99.999 %) is the default: on ``ferwild:ferplus_vgg``
#: it agreed with fp32 on more FER+ test faces than MinMax (bench/bench_int8.py).
CALIBRATION_METHODS = ("percentile", "minmax")
#: Crops per calibration step: activations are histogrammed one batch at a time, so memory
#: stays bounded whatever the calibration size.
_CALIBRATION_BATCH = 32
#: Crops ``ferwild export --int8`` calibrates on, drawn from the train split.
CALIBRATION_CROPS = 512
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                  "MatMulInteger", "QLinearConv", "QLinearMatMul"}


def int8_path(onnx_path: str | os.PathLike) -> Path:
    """Where the int8 twin of ``onnx_path`` goes: ``model.onnx`` -> ``model.int8.onnx``."""
    path = Path(onnx_path)
    stem = path.stem if path.suffix == ".onnx" else path.name
    return path.with_name(f"{stem}.int8.onnx")


@contextmanager
def _quiet_quantizer():
    """Silence onnxruntime.quantization's prints ("Collecting tensor data ...") and its root-logger
    warnings (e.g. per-channel axis notes on a 1-D BatchNorm scale): noise to a ferwild user."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with _quiet_exporter():
            yield
    finally:
        logging.disable(previous)


def _check_quantize_arguments(fp32: Any, src: Path, out: Path, calibration: Any, mode: str | None,
                              method: str) -> tuple[str, np.ndarray | None]:
    """``(mode, float32 crops or None)``, or an :class:`ExportError` naming what is wrong."""
    if "quantization" in fp32.metadata:
        raise ExportError(f"{src} is already quantised ({fp32.metadata['quantization'].get('mode')} int8); "
                          "quantise the fp32 export instead")
    if out.is_dir():
        raise ExportError(f"{out} is a directory; give the path of the .onnx file to write")
    if out.resolve() == src.resolve():
        raise ExportError(f"the int8 twin must not overwrite its fp32 source {src}; give another out_path")
    mode = mode if mode is not None else ("static" if calibration is not None else "dynamic")
    if mode not in QUANT_MODES:
        raise ExportError(f"mode must be one of {list(QUANT_MODES)}, not {mode!r}")
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"method must be one of {list(CALIBRATION_METHODS)}, not {method!r}")
    if mode == "dynamic":
        if calibration is not None:
            raise ExportError("dynamic quantisation takes no calibration crops; use mode='static' with them")
        return mode, None
    if calibration is None:
        raise ExportError("static quantisation needs calibration crops (normalised pixel_values); "
                          "without them use mode='dynamic'")
    crops = np.asarray(calibration)
    size = fp32.input_size
    if crops.dtype.kind != "f" or crops.ndim != 4 or crops.shape[1:] != (3, size, size) or len(crops) == 0:
        raise ExportError(f"calibration must be normalised float pixel_values (N, 3, {size}, {size}) with N >= 1; "
                          f"got {crops.dtype} {crops.shape}")
    if not np.all(np.isfinite(crops)):
        raise ExportError("calibration crops contain NaN or infinite values")
    return mode, np.ascontiguousarray(crops, dtype=np.float32)


def _dedupe_initializers(proto: Any) -> int:
    """Point nodes that use identical initializers at one copy; the number of copies dropped.

    ORT's pre-processing folds each BatchNorm into its Conv per node, so a graph that runs the
    same weights twice (the flip pass of test-time augmentation) comes out with two copies.
    """
    import hashlib

    from onnx import numpy_helper

    if any(attr.g.node or attr.graphs for node in proto.graph.node for attr in node.attribute):
        return 0  # subgraphs may name outer initializers: leave such graphs alone
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    for init in list(proto.graph.initializer):
        key = (init.data_type, tuple(init.dims), hashlib.sha256(numpy_helper.to_array(init).tobytes()).digest())
        if key in first:
            rename[init.name] = first[key]
            proto.graph.initializer.remove(init)
        else:
            first[key] = init.name
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    return len(rename)


def _pre_process(src: Path, folder: Path) -> tuple[Path, str]:
    """ORT's quantisation pre-processing (symbolic shape inference, graph optimisation that folds
    BatchNorm into Conv, ONNX shape inference) with duplicated initializers merged again; the
    file to quantise and what was done. A graph ORT cannot pre-process is quantised as it is."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = folder / "pre.onnx"
    try:
        quant_pre_process(str(src), str(pre))
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs
        return src, f"skipped ({first_line(exc)})"
    proto = onnx.load(str(pre))
    merged = _dedupe_initializers(proto)
    onnx.save_model(proto, str(pre), save_as_external_data=False)
    return pre, f"shape inference + graph optimisation, {merged} duplicated initializers merged"


def _quantize(q: Any, model_in: Path, model_out: Path, crops: np.ndarray | None, method: str,
              reduce_range: bool) -> None:
    """Static QDQ (uint8 activations, int8 per-channel weights) calibrated on ``crops`` one batch
    at a time, or dynamic (int8 per-channel weights) when ``crops`` is None."""
    if crops is None:
        q.quantize_dynamic(str(model_in), str(model_out), weight_type=q.QuantType.QInt8, per_channel=True,
                           reduce_range=reduce_range)
        return

    class Crops(q.CalibrationDataReader):
        """Batches of calibration crops; ``set_range`` lets the calibrator take one at a time."""

        def __init__(self) -> None:
            self.batches = [crops[i:i + _CALIBRATION_BATCH] for i in range(0, len(crops), _CALIBRATION_BATCH)]
            self.pending = iter(self.batches)

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.pending = iter(self.batches[start_index:end_index])

        def get_next(self) -> dict | None:
            batch = next(self.pending, None)
            return None if batch is None else {INPUT_NAME: batch}

    calibrate = q.CalibrationMethod.Percentile if method == "percentile" else q.CalibrationMethod.MinMax
    q.quantize_static(str(model_in), str(model_out), Crops(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, calibrate_method=calibrate,
                      reduce_range=reduce_range,
                      extra_options={"CalibStridedMinMax": 1})  # one batch per calibration step


def _agreement(fp32: Any, int8_path_: Path, x: np.ndarray) -> dict[str, Any]:
    """How the int8 file's probabilities compare with the fp32 file's on ``x``."""
    from ferwild.backends import OnnxClassifier

    ref = fp32.predict_proba(x)
    got = OnnxClassifier(int8_path_, intra_op_threads=1).predict_proba(x)
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        raise ExportError(f"the int8 model returned {got.shape} probabilities with non-finite values or the "
                          f"wrong shape (fp32: {ref.shape}); the file was not written")
    diff = np.abs(got - ref)
    return {"faces": len(x), "argmax_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))),
            "max_abs_diff_probabilities": float(diff.max()), "mean_abs_diff_probabilities": float(diff.mean())}


def _install_int8(proto: Any, out: Path, fp32: Any, x: np.ndarray) -> dict[str, Any]:
    """Write ``proto`` beside ``out``, open and compare it there, then rename it over ``out``."""
    from ferwild.files import atomic_target

    tmp = atomic_target(out)
    try:
        _save_inline(proto, tmp)
        agreement = _agreement(fp32, tmp, x)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return agreement


def quantize_onnx(onnx_path: str | os.PathLike, out_path: str | os.PathLike, *,
                  calibration: np.ndarray | None = None, mode: str | None = None,
                  method: str = "percentile", reduce_range: bool = False) -> dict[str, Any]:
    """Write an int8 twin of the ferwild ONNX export ``onnx_path`` at ``out_path``.

    ``mode="static"`` (the default when ``calibration`` is given): QDQ quantisation with uint8
    activations and per-channel int8 weights, activation ranges calibrated on ``calibration``,
    normalised ``pixel_values`` float32 ``(N, 3, S, S)`` as the model takes them (real face
    crops: a few hundred are plenty), with ``method`` ``"percentile"`` (99.999 %, the default,
    which agreed better with fp32 on the shipped model) or ``"minmax"``. ``mode="dynamic"``
    (the default without ``calibration``): int8 weights, activations quantised at run time;
    smaller, but on x86 CPUs usually slower than fp32 for these CNNs (ConvInteger).
    ``reduce_range`` quantises weights to 7 bits: on x86 CPUs without VNNI, ONNX Runtime's
    uint8 x int8 kernels can saturate with full 8-bit weights; 7 bits avoid it for some accuracy.

    ORT's pre-processing (shape inference, BatchNorm folded into Conv) runs first. The twin
    keeps the input/output names and the ``"ferwild"`` metadata, plus a ``"quantization"``
    entry (precision, mode, method, calibration size, onnxruntime version), so
    :class:`~ferwild.backends.OnnxClassifier` opens it unchanged. It is written beside
    ``out_path``, opened and compared with the fp32 file there (on up to 64 calibration crops,
    else on random normalised pixels), then renamed over ``out_path``.

    Returns a JSON-able report: path, source, mode, method, calibration_size, reduce_range, size_bytes and
    fp32_size_bytes, pre_processing, agreement (``faces``, ``argmax_agreement``, max and mean
    absolute difference of probabilities) and seconds.

    Raises:
        OnnxModelNotFound: no file at ``onnx_path`` (a ``FileNotFoundError`` and ``ValueError``).
        OnnxModelError: ``onnx_path`` is not ONNX or not a ferwild export.
        ExportError: already int8, bad mode/method/calibration, ``out_path`` a directory or the
            source itself, or an int8 model that does not run.
    """
    t0 = time.perf_counter()
    from ferwild.backends import OnnxClassifier

    src, out = Path(onnx_path), Path(out_path)
    fp32 = OnnxClassifier(src, intra_op_threads=1)  # a clear error for a missing or foreign file
    mode, crops = _check_quantize_arguments(fp32, src, out, calibration, mode, method)
    import onnx
    import onnxruntime
    import onnxruntime.quantization as q

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ferwild-int8-", dir=out.parent) as folder, _quiet_quantizer():
        model_in, pre_processing = _pre_process(src, Path(folder))
        try:
            _quantize(q, model_in, Path(folder) / "int8.onnx", crops, method, bool(reduce_range))
        except Exception as exc:
            raise ExportError(f"onnxruntime could not quantise {src} ({mode}): {first_line(exc)}") from exc
        proto = onnx.load(str(Path(folder) / "int8.onnx"))
    source = onnx.load(str(src), load_external_data=False)
    del proto.metadata_props[:]
    proto.metadata_props.extend(p for p in source.metadata_props if p.key != METADATA_KEY)
    quantization = {"precision": "int8", "mode": mode, "format": "QDQ" if mode == "static" else "dynamic",
                    "activations": "uint8" if mode == "static" else "uint8, quantised at run time",
                    "weights": "int8 (7-bit range), per channel" if reduce_range else "int8, per channel",
                    "reduce_range": bool(reduce_range),
                    "calibration_method": method if mode == "static" else None,
                    "calibration_size": 0 if crops is None else len(crops),
                    "onnxruntime_version": onnxruntime.__version__, "source_size_bytes": src.stat().st_size}
    metadata = {**fp32.metadata, "quantization": quantization}
    how = f"static QDQ, {method} calibration on {len(crops)} crops" if crops is not None else "dynamic"
    _set_metadata(proto, metadata, f"{source.doc_string} Quantised to int8 ({how}).")
    if crops is not None:
        check_x = crops[:64]
    else:
        gen = np.random.default_rng(0)
        check_x = fp32.preprocessing.normalize_array(gen.random((16, 3, fp32.input_size, fp32.input_size)))
    agreement = _install_int8(proto, out, fp32, check_x)
    return {"path": str(out), "source": str(src), "mode": mode, "method": quantization["calibration_method"],
            "calibration_size": quantization["calibration_size"], "reduce_range": bool(reduce_range),
            "size_bytes": out.stat().st_size,
            "fp32_size_bytes": src.stat().st_size, "pre_processing": pre_processing,
            "agreement": {**agreement, "inputs": "calibration crops" if crops is not None else "random pixels"},
            "seconds": time.perf_counter() - t0}


def calibration_crops(prepared_dir: str | os.PathLike, preprocessing: Any, *, n: int = CALIBRATION_CROPS,
                      split: str = "train", seed: int = 0) -> np.ndarray:
    """Up to ``n`` crops of a prepared dataset's ``split`` (originals, not augmented copies, drawn
    at random with ``seed``, in manifest order) as the model's normalised ``pixel_values``.

    Raises ``FileNotFoundError`` when ``prepared_dir`` is not a prepared dataset and
    :class:`ExportError` when the split has no crops.
    """
    from ferwild.data.prepared import PreparedDataset

    data = PreparedDataset(prepared_dir)
    rows = data.rows(split, include_augmented=False)
    if len(rows) == 0:
        raise ExportError(f"{prepared_dir} has no {split} crops to calibrate on")
    if len(rows) > n:
        rows = rows.iloc[np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))]
    return preprocessing.pixel_values(data.images(rows))


def export_int8_twin(onnx_path: str | os.PathLike, *, calibration_dir: str | os.PathLike | None = None,
                     n_crops: int = CALIBRATION_CROPS) -> dict[str, Any]:
    """The int8 twin of an export, written beside it as ``<stem>.int8.onnx`` (what ``ferwild export
    --int8`` does): static, calibrated on up to ``n_crops`` train crops of the prepared dataset
    ``calibration_dir``, or dynamic when it is None. Returns :func:`quantize_onnx`'s report."""
    from ferwild.backends import OnnxClassifier

    crops = None
    if calibration_dir is not None:
        crops = calibration_crops(calibration_dir, OnnxClassifier(onnx_path).preprocessing, n=n_crops)
    return quantize_onnx(onnx_path, int8_path(onnx_path), calibration=crops)
