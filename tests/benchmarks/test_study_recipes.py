"""The recipe study runs end to end on a few models (its figures are measured by running it, not here)."""


def test_the_recipe_study_fine_tunes_a_variant_and_scores_every_expert_on_every_hidden_layer(run_benchmark):
    figures, stdout = run_benchmark("study_recipes.py", "--tree", "mixer-supervised", "--head", "masked",
                                    "--models", "20", "--steps", "0.1")
    assert figures["recipe"] == {"tree": "mixer-supervised", "head": "masked", "steps": 0.1, "lora_rank": 4, "models": 20}
    assert set(figures["layers"]) == {"block1.channel_fc2", "block2.channel_fc2"}  # the LoRA layers, merged; no head
    for row in figures["layers"].values():
        assert row["shape"] == [64, 512]
        assert set(row) == {"shape", "probex", "linear probex", "dense"}
        assert row["dense"][0]["parameters"] == 24 * 64 * 512 + 24
        assert all(0.0 <= run["test"] <= 1.0 for runs in (row["probex"], row["dense"]) for run in runs)
    assert 0.5 <= figures["majority"] <= 1.0 and "majority rule" in stdout
