"""Render every model card page from its ``card.json``.

    python recipes/render_model_cards.py      # rewrites MODEL_CARD.md and docs/model_card_<name>.md

MODEL_CARD.md (the default ``ferplus_vgg``), docs/model_card_fer2013_vgg.md and the pages of
``ferwild:ferplus_ensemble`` and ``ferwild:ferplus_live``, formatted by
:func:`ferwild.model_cards.rendered_pages`. A card is the shipped model's
(``ferwild/weights/<name>/card.json``) or, for a model measured and kept out of the package
(``"shipped": false``), ``docs/experiments/<name>.card.json``.

Every figure on these pages comes from the model's ``card.json``, written by the recipe that
measured the packed model (``recipes/ship_*.py``); this script only formats them, so a page can
be re-rendered without measuring again.
"""

from __future__ import annotations

from pathlib import Path

from ferwild.model_cards import rendered_pages

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    for doc, text in rendered_pages(REPO).items():
        doc.write_text(text, encoding="utf-8")
        print(f"wrote {doc.relative_to(REPO)}")


if __name__ == "__main__":
    main()
