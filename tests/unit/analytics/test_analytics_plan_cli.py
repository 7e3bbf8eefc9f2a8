"""`prefloop ab plan`: sample sizes from the command line."""

from __future__ import annotations

from click.testing import CliRunner

from prefloop.analytics.stats import sample_size, sample_size_proportion
from prefloop.loop.cli import cli


def plan(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["ab", "plan", *args])
    return result.exit_code, " ".join(result.output.split())


def test_a_rate_plan_prints_the_users_each_arm_needs() -> None:
    code, output = plan("--rate", "0.12", "--mde", "0.01")
    size = sample_size_proportion(0.12, 0.01)
    assert code == 0
    assert f"{size.n_a:,} users on A + {size.n_b:,} on B = {size.total:,}" in output


def test_a_mean_plan_with_an_uneven_split_puts_fewer_users_on_b() -> None:
    code, output = plan("--mean", "3.5", "--sd", "1.2", "--mde", "0.05", "--relative",
                        "--split", "10")  # fmt: skip
    size = sample_size(3.5, 1.2, 0.05, split=0.1, relative=True)
    assert code == 0 and size.n_b < size.n_a
    assert f"{size.n_a:,} users on A + {size.n_b:,} on B" in output


def test_a_plan_without_a_baseline_says_what_to_give() -> None:
    code, output = plan("--mde", "0.1")
    assert code == 2 and "give either --rate, or --mean with --sd" in output
