"""The README opens with the commands `.ci/run` runs, so what CI checks is what users type."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def _ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]


def test_readme_opens_with_the_two_commands_ci_runs():
    install_and_run, tests = _ci_commands()
    first, second = _readme_commands()[:2]
    assert first == install_and_run
    assert first.startswith(
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]"'
    )
    assert " && python -m scripts.train_atari " in first
    assert second == tests


def test_main_job_is_an_atari_sequence_launched_from_flags():
    first = _readme_commands()[0]
    games = re.search(r"--games=(\S+)", first).group(1).split(",")
    assert len(games) >= 2
    assert "--workdir=" in first


def test_the_python_example_runs_and_nap_holds_the_kernel_norms():
    """The README's library example runs as written; its NaP keeps each hidden kernel at its
    initial norm after the update, and the diagnostics name every layer."""
    (block,) = re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    import numpy as np  # noqa: PLC0415

    metrics, params, new_params = namespace["metrics"], namespace["params"], namespace["new_params"]
    for layer in ("hidden_0", "hidden_1"):
        before = np.linalg.norm(np.asarray(params[layer]["linear"]["kernel"]))
        after = np.linalg.norm(np.asarray(new_params[layer]["linear"]["kernel"]))
        np.testing.assert_allclose(after, before, rtol=1e-5)
        np.testing.assert_allclose(float(metrics[f"weight_norm/{layer}"]), after, rtol=1e-5)
        assert f"srank/{layer}" in metrics
