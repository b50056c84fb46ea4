"""The training benchmark runs end to end (its figures are measured by running it, not here)."""


def test_the_training_benchmark_runs_every_setting_and_checks_its_readers_agree(run_benchmark):
    figures, stdout = run_benchmark("bench_training.py", "--tree", "mixer-supervised", "--epochs", "2",
                                    "--official-epochs", "1", "--repeats", "1")
    figures = figures["trees"]["mixer-supervised"]
    from probex import jungle

    assert figures["layer"] == jungle.recommended_layers()["mixer-supervised"] and figures["models"] == 210
    assert set(figures["settings"]) == {"official", "per-core", "in-process"}
    assert figures["settings"]["official"]["batch_size"] == 128 and figures["settings"]["official"]["official_workers"] == 4
    assert all(setting["speed_ratio"] > 0 for setting in figures["settings"].values())
    assert "ratio" in stdout
