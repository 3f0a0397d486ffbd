"""The two model backends behind one protocol: PyTorch (a trained run) and ONNX Runtime (an export).

A :class:`Classifier` maps normalised ``pixel_values`` float32 ``(N, 3, S, S)`` to logits
``(N, K)``; that, and a ``backend`` name for reports, is all the
:class:`~ferwild.recognizer.Recognizer` asks of a model. Two implementations sit side by side:

* :class:`TorchClassifier` -- a run's ``FERModel`` (``Recognizer.from_run``);
* :class:`OnnxClassifier` -- a ``.onnx`` file written by :func:`ferwild.export.export_onnx`,
  read with onnxruntime alone: no checkpoint, no pickle, and no torch (its preprocessing is
  :class:`~ferwild.preprocessing.Preprocessing`, numpy only).

The ONNX file's interface (input and output names, the metadata key and format) is defined
here, where it is read; the exporter imports it to write the same names.

Errors: :class:`OnnxModelError` (a file that is missing, not ONNX, or not a ferwild export)
is a ``ValueError``, :class:`OnnxModelNotFound` also a ``FileNotFoundError``.

``import ferwild.backends`` costs numpy only: torch is imported by :class:`TorchClassifier`
when it runs, onnxruntime by :class:`OnnxClassifier` when it is built.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ferwild.formatting import first_line
from ferwild.preprocessing import Preprocessing

__all__ = [
    "INPUT_NAME",
    "METADATA_FORMAT",
    "METADATA_KEY",
    "OUTPUT_NAMES",
    "Classifier",
    "OnnxClassifier",
    "OnnxModelError",
    "OnnxModelNotFound",
    "TorchClassifier",
]

#: The ONNX graph's input: normalised ``(N, 3, S, S)`` float32 pixels, ``N`` dynamic.
INPUT_NAME = "pixel_values"
#: The ONNX graph's outputs, both ``(N, K)``.
OUTPUT_NAMES = ("logits", "probabilities")
#: The ``metadata_props`` key holding the JSON that makes the file self-contained.
METADATA_KEY = "ferwild"
#: Bumped when the metadata's meaning changes; readers refuse another major version.
METADATA_FORMAT = "ferwild.onnx/1"


@runtime_checkable
class Classifier(Protocol):
    """What a recogniser needs of a model: normalised pixels in, logits out.

    ``backend`` names the runtime for reports (``"torch"``, ``"onnx"``). Calling it on
    ``pixel_values`` float32 ``(N, 3, S, S)``, already resized and normalised per the model's
    :class:`~ferwild.preprocessing.Preprocessing`, returns float ``(N, K)`` logits in the
    order of the model's label names.
    """

    backend: str

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        """Logits ``(N, K)`` for ``pixel_values`` ``(N, 3, S, S)``."""
        ...


class TorchClassifier:
    """A trained run's model (a ``FERModel`` or any ``nn.Module``) as a :class:`Classifier`.

    The model is put in eval mode; ``device`` is where it lives (inputs are moved there).
    """

    backend = "torch"

    def __init__(self, model: Any, device: Any) -> None:
        self.model = model.eval()
        self.device = device

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        """Float32 logits ``(N, K)`` for normalised ``pixel_values`` ``(N, 3, S, S)``."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()


class OnnxModelError(ValueError):
    """An ONNX file :class:`OnnxClassifier` cannot use: not ONNX, or not exported by ferwild."""


class OnnxModelNotFound(OnnxModelError, FileNotFoundError):
    """The ONNX file does not exist (also a ``FileNotFoundError``)."""


class OnnxClassifier:
    """An exported ferwild model run by onnxruntime: a :class:`Classifier` without torch.

    ``OnnxClassifier(path, providers=None, intra_op_threads=None)``: ``providers`` defaults to
    ``["CPUExecutionProvider"]`` (predictable everywhere; pass e.g.
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` for a GPU); ``intra_op_threads`` caps
    onnxruntime's threads (default: its own choice, all cores).

    Attributes: ``label_names``, ``preprocessing`` (:class:`~ferwild.preprocessing.Preprocessing`),
    ``face_alignment`` (dict, see :class:`~ferwild.data.faces.FaceAlignment`),
    ``model_config``, ``metadata`` (the whole embedded dict), ``path``, ``session``.

    Calling it on normalised ``pixel_values`` ``(N, 3, S, S)`` returns float32 logits
    ``(N, K)``; :meth:`predict_proba` returns the probabilities. Only the ONNX graph and its
    JSON metadata are read: nothing is unpickled.

    Raises:
        OnnxModelNotFound: no file at ``path`` (also a ``FileNotFoundError``).
        OnnxModelError: not an ONNX model onnxruntime can load, no or unreadable ferwild
            metadata, a graph whose interface does not match it, or an unavailable provider.
    """

    backend = "onnx"

    def __init__(self, path: str | os.PathLike, *, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.exists():
            raise OnnxModelNotFound(f"no ONNX model at {self.path}")
        if not self.path.is_file():
            raise OnnxModelError(f"{self.path} is not a file (give the path of an exported .onnx file)")
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing or not providers:
            raise OnnxModelError(f"onnxruntime providers {missing or providers} are not available here; "
                                 f"available: {ort.get_available_providers()}")
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            if isinstance(intra_op_threads, bool) or int(intra_op_threads) < 1:
                raise ValueError(f"intra_op_threads must be a positive integer, not {intra_op_threads!r}")
            options.intra_op_num_threads = int(intra_op_threads)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are not one class
            raise OnnxModelError(f"{self.path} is not an ONNX model onnxruntime can load: {first_line(exc)}") from None

        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise OnnxModelError(
                f"{self.path} is an ONNX model but was not exported by ferwild export; it has no "
                f"{METADATA_KEY!r} metadata (label names, preprocessing). Export a run with "
                "ferwild.export.export_onnx (the `ferwild export` command)."
            )
        try:
            meta = json.loads(raw)
            fmt = meta.get("format")
            if fmt != METADATA_FORMAT:  # a later format may mean something else: refuse, don't guess
                raise ValueError(f"metadata format {fmt!r}; this ferwild reads {METADATA_FORMAT!r}")
            self.label_names: list[str] = [str(n) for n in meta["label_names"]]
            self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
            self.face_alignment: dict = dict(meta["face_alignment"])
            self.model_config: dict = dict(meta["model_config"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OnnxModelError(f"{self.path} has unreadable ferwild metadata: {first_line(exc)}") from None
        self.metadata: dict = meta

        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if list(inputs) != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(outputs):
            raise OnnxModelError(f"{self.path} has inputs {list(inputs)} and outputs {outputs}; a ferwild export "
                                 f"has [{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}")
        size = self.preprocessing.input_size
        graph_shape = list(inputs[INPUT_NAME].shape)
        if len(graph_shape) != 4 or graph_shape[1:] != [3, size, size]:
            raise OnnxModelError(f"{self.path}: the graph's input shape {graph_shape} does not match its metadata "
                                 f"(N, 3, {size}, {size})")
        k = self.session.get_outputs()[outputs.index("logits")].shape[-1]
        if isinstance(k, int) and k != len(self.label_names):
            raise OnnxModelError(f"{self.path}: the graph predicts {k} classes but the metadata names "
                                 f"{len(self.label_names)}")
        self._opened_with = (str(self.path), providers, intra_op_threads)

    def __reduce__(self):
        # An onnxruntime session cannot be pickled: a copy (e.g. sent to a Ray actor) opens the
        # file again, which must exist at the same path there (storage every node sees).
        return (_reopen_onnx_classifier, self._opened_with)

    @property
    def input_size(self) -> int:
        """The side ``S`` of the square input the graph takes."""
        return self.preprocessing.input_size

    @property
    def num_classes(self) -> int:
        """``K``, the number of classes (logits per face)."""
        return len(self.label_names)

    def __repr__(self) -> str:
        return (f"OnnxClassifier({str(self.path)!r}, model={self.model_config.get('name')!r}, "
                f"input=(N, 3, {self.input_size}, {self.input_size}), labels={self.label_names})")

    def _check_input(self, pixel_values: Any) -> np.ndarray:
        x = np.asarray(pixel_values)
        s = self.input_size
        expected = f"(N, 3, {s}, {s}) float32, normalised with mean {list(self.preprocessing.mean)} " \
                   f"and std {list(self.preprocessing.std)}"
        if x.dtype.kind != "f":
            # the usual mistake: raw uint8 pixels straight from an image
            raise ValueError(f"pixel_values must be floats {expected}; got dtype {x.dtype} "
                             "(scale pixels to [0, 1] and normalise them first)")
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"pixel_values must have shape {expected}; got shape {tuple(x.shape)}")
        # other float widths are converted: the graph takes float32 only
        return np.ascontiguousarray(x, dtype=np.float32)

    def outputs(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, probabilities)``, both float32 ``(N, K)``, from one run of the graph."""
        x = self._check_input(pixel_values)
        if len(x) == 0:
            empty = np.zeros((0, self.num_classes), dtype=np.float32)
            return empty, empty.copy()
        logits, probs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return logits, probs

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        """Logits float32 ``(N, K)`` for normalised ``pixel_values`` ``(N, 3, S, S)``.

        Raises:
            ValueError: not floats, or not shaped ``(N, 3, S, S)`` (the message gives S).
        """
        x = self._check_input(pixel_values)
        if len(x) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return self.session.run(["logits"], {INPUT_NAME: x})[0]

    def predict_proba(self, pixel_values: np.ndarray) -> np.ndarray:
        """Softmax probabilities float32 ``(N, K)`` (the graph's own ``probabilities`` output)."""
        x = self._check_input(pixel_values)
        if len(x) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return self.session.run(["probabilities"], {INPUT_NAME: x})[0]


def _reopen_onnx_classifier(path: str, providers: list[str], intra_op_threads: int | None) -> OnnxClassifier:
    return OnnxClassifier(path, providers=providers, intra_op_threads=intra_op_threads)
