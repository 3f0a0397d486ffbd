"""Label sets and the mapping that normalises the many spellings of expression names.

A label set is an ordered tuple of canonical names; its order defines the class ids
(``label2id``) that travel with every prepared dataset and checkpoint.
"""

from __future__ import annotations

LABEL_SETS: dict[str, tuple[str, ...]] = {
    # Ekman's basic six: the study's default (no neutral).
    "basic6": ("anger", "disgust", "fear", "happiness", "sadness", "surprise"),
    "basic7": ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"),
    # AffectNet's eight categories.
    "affectnet8": (
        "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral", "contempt",
    ),
}

# Every name any supported set uses, plus the spellings datasets use for them.
_ALIASES: dict[str, str] = {
    "anger": "anger", "angry": "anger", "ang": "anger", "an": "anger", "mad": "anger",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust", "dis": "disgust",
    "di": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fea": "fear",
    "happiness": "happiness", "happy": "happiness", "happ": "happiness", "hap": "happiness",
    "joy": "happiness", "ha": "happiness",
    "sadness": "sadness", "sad": "sadness", "sa": "sadness",
    "surprise": "surprise", "surprised": "surprise", "surprising": "surprise", "sur": "surprise",
    "su": "surprise",
    "neutral": "neutral", "neu": "neutral", "ne": "neutral", "calm": "neutral",
    "contempt": "contempt", "contemptuous": "contempt", "con": "contempt",
}

# FER2013's integer codes (fer2013.csv "emotion" column).
FER2013_CODES: dict[int, str] = {
    0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise", 6: "neutral",
}


class UnknownLabelError(ValueError):
    """Raised for a label name no supported set knows."""


def normalize_label(name: object) -> str:
    """Map a raw label (``"Happy"``, ``"surprised"``, ``" ANGRY "``) to its canonical name.

    Raises:
        UnknownLabelError: when the name is not a known expression.
    """
    key = str(name).strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    try:
        return _ALIASES[key]
    except KeyError:
        raise UnknownLabelError(f"unknown label {str(name)!r}") from None


def get_label_set(name: str) -> tuple[str, ...]:
    """Return the ordered class names of a label set (``basic6``, ``basic7``, ``affectnet8``)."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(
            f"unknown label set {name!r}; choose one of {', '.join(LABEL_SETS)}"
        ) from None


def label2id(label_set: str) -> dict[str, int]:
    """Class name -> id for a label set (the order of ``LABEL_SETS``)."""
    return {name: i for i, name in enumerate(get_label_set(label_set))}


def id2label(label_set: str) -> dict[int, str]:
    """Class id -> name for a label set."""
    return dict(enumerate(get_label_set(label_set)))
