"""The bundled model: present, documented, and as good as its card says on the shared data."""

from __future__ import annotations

import hashlib
import re

import pytest
from conftest import shared_or_skip

from maskwatch.bundled import default_model_path
from maskwatch.checkpoint import load_checkpoint

CARD = default_model_path().parent / "MODEL_CARD.md"


def test_bundled_model_loads_and_matches_its_card():
    path = default_model_path()
    checkpoint = load_checkpoint(path)
    assert checkpoint["classes"] == ["with_mask", "without_mask"]
    card = CARD.read_text()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in card, "MODEL_CARD.md must state the bundled file's sha256"
    assert re.search(r"maskwatch train .*--", card), "the card must give the exact training command"
    for ingredient in (checkpoint.get("averaging") or {}).get("ingredients") or []:  # a model soup
        assert re.search(r"maskwatch average .*--out", card), "the card must give the averaging command"
        sha = re.search(r"sha256 ([0-9a-f]{64})", ingredient["name"])
        assert sha and sha.group(1) in card, f"the card must name the ingredient {ingredient['name']}"


@pytest.mark.integration
def test_bundled_model_on_faces_test():
    from maskwatch.evaluate import evaluate_dataset

    evaluation = evaluate_dataset(default_model_path(), shared_or_skip("faces"), split="test")
    report = evaluation.report
    assert report["n_images"] == 566
    assert report["accuracy"] >= 0.99
