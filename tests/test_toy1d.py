"""The 1-D toy (carl.md §1): a 1-D Ξ computes A⁻¹∘B."""

from equireg.toy1d import plot_toy, solve_toy


def test_xi_inverts_the_toy_diffeomorphism(tmp_path):
    result = solve_toy()
    print("toy max error", result["max_error"])
    assert result["max_error"] < 0.01
    plot_toy(result).savefig(tmp_path / "toy.png")
    assert (tmp_path / "toy.png").stat().st_size > 10_000


def test_blunt_attention_does_not_invert_it():
    # σ = kernel_width / feature_scale = 0.05 in intensity: far too soft to resolve A⁻¹
    assert solve_toy(feature_scale=2.0)["max_error"] > 0.01
