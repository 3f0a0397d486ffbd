"""MTCNN as an inference detector: :class:`~ferwild.data.faces.FaceDetector` (the one MTCNN
wrapper, which ``prepare`` aligns with) with its name and the rule for images too small to search.

MTCNN's image pyramid starts at the smallest face it looks for (``min_face_size``, 20 px, in
the image after its ``max_side`` downscale): an image smaller than that has no scale to search
and facenet-pytorch raises ("torch.cat(): expected a non-empty list of Tensors"). ``prepare``
keeps reporting that as a detector error (its manifest says why the image was not aligned);
for the recogniser such an image simply holds no face, so :class:`MTCNNDetector` answers an
empty list without running the network.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ferwild.data.faces import FaceDetection, FaceDetector

__all__ = ["MTCNNDetector"]


class MTCNNDetector(FaceDetector):
    """facenet-pytorch MTCNN for the recogniser (``--detector mtcnn``): :class:`FaceDetector`'s
    detection, except that an image smaller than the smallest face is no face (see
    :meth:`too_small`), not an error. Arguments as for :class:`~ferwild.data.faces.FaceDetector`."""

    def __repr__(self) -> str:
        return (f"MTCNNDetector(min_confidence={self.min_confidence}, min_face_size={self.min_face_size}, "
                f"max_side={self.max_side}, device={self.device!r})")

    def too_small(self, image: np.ndarray) -> bool:
        """Whether ``image``'s shorter side, after the ``max_side`` downscale detection applies,
        is below ``min_face_size``: no face of the searched sizes fits in it."""
        shape = np.shape(image)
        if len(shape) < 2 or min(shape[:2]) <= 0:
            return False  # not an image: detection reports what is wrong with it
        h, w = shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        return min(h, w) * scale < self.min_face_size

    def detect_all(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection] | Exception]:
        """:meth:`FaceDetector.detect_all`, with ``[]`` (no face) for the images :meth:`too_small`
        to search instead of MTCNN's exception."""
        searched = [i for i, image in enumerate(images) if not self.too_small(image)]
        out: list[list[FaceDetection] | Exception] = [[] for _ in images]
        for i, found in zip(searched, super().detect_all([images[i] for i in searched]) if searched else []):
            out[i] = found
        return out
