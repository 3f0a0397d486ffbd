"""Face detectors for inference, and the one factory that builds them by name.

* ``mtcnn`` (:class:`MTCNNDetector`): facenet-pytorch MTCNN, finds faces down to 20 px; the
  default for photos. It re-uses ``prepare``'s MTCNN wrapper
  (:class:`ferwild.data.faces.FaceDetector`): data preparation sits below inference and must
  not import it.
* ``fast`` / ``fast-tiled`` (:class:`BlazeFaceDetector`): MediaPipe BlazeFace short-range in
  ONNX Runtime, ~2.5 ms a frame, for video and live use; tiled, also over overlapping squares
  (groups).
* ``none``: no detector; each image already is one face crop.

``create_detector(name, min_confidence=..., device=...)`` turns a name into a detector; each
detector carries its ``name`` back. ``ferwild.recognizer``, ``ferwild.serve`` and the CLI use them.
"""

from ferwild.detectors.blazeface import BlazeFaceDetector
from ferwild.detectors.factory import DETECTORS, FAST_DETECTORS, create_detector
from ferwild.detectors.mtcnn import MTCNNDetector

__all__ = ["DETECTORS", "FAST_DETECTORS", "BlazeFaceDetector", "MTCNNDetector", "create_detector"]
