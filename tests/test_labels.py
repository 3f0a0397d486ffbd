import pytest

from ferwild.labels import LABEL_SETS, UnknownLabelError, get_label_set, id2label, label2id, normalize_label


@pytest.mark.parametrize("raw,expected", [
    ("angry", "anger"), ("Happy", "happiness"), (" SAD ", "sadness"), ("surprised", "surprise"),
    ("Disgusted", "disgust"), ("fearful", "fear"), ("neutral", "neutral"), ("contempt", "contempt"),
    ("happiness", "happiness"),
])
def test_normalize_label_maps_common_spellings(raw, expected):
    assert normalize_label(raw) == expected


def test_unknown_label_raises():
    with pytest.raises(UnknownLabelError, match="banana"):
        normalize_label("banana")


def test_label_sets_nest_and_ids_follow_order():
    assert get_label_set("basic6") == LABEL_SETS["basic7"][:6]
    assert get_label_set("affectnet8")[:7] == LABEL_SETS["basic7"]
    assert label2id("basic6")["happiness"] == 3
    assert id2label("basic7")[6] == "neutral"
    with pytest.raises(ValueError, match="basic6"):
        get_label_set("basic5")
