"""The reward curves `treegrpo register` draws from the training history."""

from treegrpo.training.curves import curve_keys, plot_history


def test_reward_curves_are_a_png(tmp_path):
    history = [{"iteration": i, "reward_mean": i, "reward_jpeg_compressibility_mean": -3 + i / 10} for i in range(5)]
    assert curve_keys(history) == ["reward_jpeg_compressibility_mean"]
    path = plot_history(history, tmp_path / "curve.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_the_weighted_mean_is_drawn_when_no_reward_has_its_own_curve():
    assert curve_keys([{"iteration": 0, "reward_mean": 1.0}, {"iteration": 1, "loss": 0.5}]) == ["reward_mean"]
