"""The model card says which network the model is: frozen with a head, or fine-tuned."""

from __future__ import annotations

import copy

from lesionlib import DISCLAIMER, modelcard
from tests import test_export

exported, saved_head = test_export.exported, test_export.saved_head  # the exported smoke model (fixtures)


def test_the_card_names_a_frozen_network_or_a_fine_tuned_one(exported, trained_smoke):
    _, manifest, *_ = trained_smoke
    record = exported.record
    metrics = test_export._metrics(record["training"])
    frozen = modelcard.render(record, metrics, manifest)
    assert "A frozen ImageNet network, **tiny**" in frozen and "fine-tuned" not in frozen
    tuned = copy.deepcopy(record)
    tuned["training"]["backbone"]["fine_tuned"] = {"alpha": 1.0, "first_block": 0, "epochs": 15, "ships": True,
                                                   "weights": "imagenet"}
    card = modelcard.render(tuned, metrics, manifest)
    assert "from ImageNet weights, **fine-tuned** on these images (every layer, at most 15 epochs)" in card
    assert "frozen ImageNet network" not in card and DISCLAIMER in card
    tuned["training"]["backbone"]["fine_tuned"].update(first_block=16, epochs=1, weights="None")  # smoke's
    assert "from random weights, **fine-tuned** on these images (from block 16 on, at most 1 epoch)" in \
        modelcard.render(tuned, metrics, manifest)
    tuned["training"]["backbone"]["fine_tuned"].update(weights="/data/my_mobilenet.weights.h5")  # a file
    assert "from the weights in `my_mobilenet.weights.h5`, **fine-tuned**" in modelcard.render(tuned, metrics, manifest)


def test_the_card_lists_the_collections_learned_from(exported, trained_smoke):
    _, manifest, *_ = trained_smoke
    record = exported.record
    metrics = test_export._metrics(record["training"])
    assert "several collections" not in modelcard.render(record, metrics, manifest)
    two = manifest.assign(source=["vienna"] * 30 + ["porto"] * (len(manifest) - 30))
    assert len(manifest) - 30 > 30  # so porto comes first: the larger collection
    assert f"Learned from several collections: porto {len(manifest) - 30}, vienna 30 images." in \
        modelcard.render(record, metrics, two)


def test_the_input_contract_names_the_models_own_preparation(exported):
    from lesionlib.preprocessing import preprocessing_of
    contract = modelcard.input_contract(exported.record)
    assert preprocessing_of(exported.record).describe() in contract
    assert "colour constancy" not in contract  # the smoke model's preparation has none
