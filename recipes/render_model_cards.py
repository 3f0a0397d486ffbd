"""Render the cards of ``ferwild:ferplus_ensemble`` and ``ferwild:ferplus_live`` from their ``card.json``.

    python recipes/render_model_cards.py      # rewrites docs/model_card_<name>.md for each card that exists

A card is the shipped model's (``ferwild/weights/<name>/card.json``) or, for a model measured
and kept out of the package (``"shipped": false``), ``docs/experiments/<name>.card.json``.

Every figure on these pages comes from the model's ``card.json``, written by
``recipes/ship_ferplus_models.py`` when it measured the packed model; this script only
formats them (:func:`ferwild.model_cards.render_extra_card`), so a page can be re-rendered
without measuring again.
"""

from __future__ import annotations

import json
from pathlib import Path

from ferwild.model_cards import render_extra_card

REPO = Path(__file__).resolve().parents[1]
RENDERED = ("ferplus_ensemble", "ferplus_live")


def main() -> None:
    from ferwild.shipped import WEIGHTS_DIR

    for name in RENDERED:
        card_file = WEIGHTS_DIR / name / "card.json"
        if not card_file.is_file():  # a measured model kept out of the package
            card_file = REPO / "docs" / "experiments" / f"{name}.card.json"
        if card_file.is_file():
            doc = REPO / "docs" / f"model_card_{name}.md"
            doc.write_text(render_extra_card(json.loads(card_file.read_text()), doc, REPO))
            print(f"wrote {doc.relative_to(REPO)}")


if __name__ == "__main__":
    main()
