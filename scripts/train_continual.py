r"""Runs a continual-learning sweep (variants × hyper-parameter grid × seeds) into a work dir.

  python -m scripts.train_continual --experiment=benchmarks/configs/nap_label_reset.py \
      --workdir=workdirs/nap --num_seeds=2 --config.task.num_tasks=10

``--experiment=FILE[:ARGS]`` names a published config (``:smoke``, no scale, ``:paper``; see
each file's docstring); without it the trainer's defaults run (`benchmarks.continual_config`).
``--config.<field>=<value>`` overrides any field, and ``--seed``, ``--num_seeds``, ``--norm``,
``--nap``, ``--weight_decay``, ``--data_dir`` and ``--mesh`` set their fields; both win over the
config file's variants (a ``note:`` line before training names each variant whose own value they
replace). The run contract (work dir, resume, Ctrl-C / SIGTERM, divergence, exit
statuses 0 / 1 / 3, multi-process jobs) is every launcher's: see `plasticity.launch` and
`plasticity.run`, and BUILD_NOTES.md for pod and multi-GPU launches.
"""

from __future__ import annotations


from absl import flags

from plasticity import launch

NAME = "train_continual"
MODULE = f"scripts.{NAME}"  # the flags' group in --helpfull (not the file's path)


def define_flags(values: flags.FlagValues) -> None:
    from plasticity import layers  # noqa: PLC0415 - imports JAX: inside the launch's signal hold

    flags.DEFINE_string(
        "experiment",
        None,
        "Config file FILE[:ARGS], e.g. benchmarks/configs/dohare.py:smoke.",
        flag_values=values,
        module_name=MODULE,
    )
    flags.DEFINE_integer(
        "seed",
        None,
        "First seed (runs use seed, seed + 1, ...).",
        flag_values=values,
        module_name=MODULE,
    )
    flags.DEFINE_integer(
        "num_seeds", None, "Seeds of every grid point.", flag_values=values, module_name=MODULE
    )
    flags.DEFINE_enum(
        "norm",
        None,
        list(layers.NORMS),
        "Norm before every nonlinearity.",
        flag_values=values,
        module_name=MODULE,
    )
    flags.DEFINE_bool(
        "nap", None, "Normalize-and-Project (needs a norm).", flag_values=values, module_name=MODULE
    )
    flags.DEFINE_float(
        "weight_decay", None, "Decoupled weight decay.", flag_values=values, module_name=MODULE
    )
    flags.DEFINE_string(
        "data_dir", None, "Directory with dataset files.", flag_values=values, module_name=MODULE
    )
    flags.DEFINE_string(
        "mesh",
        None,
        "Device mesh, e.g. 'seed:8' or 'auto'.",
        flag_values=values,
        module_name=MODULE,
    )


def config_of(
    values: flags.FlagValues, overrides: dict[str, str], replaced: list[str] | None = None
):
    from benchmarks.configs import common  # noqa: PLC0415 - JAX loads after the flags parse

    named = {name: values[name].value for name in common.NAMED_FLAGS}
    return common.build_config(values["experiment"].value, overrides, named, replaced)


def run(context: launch.Launch):
    from benchmarks import continual_config, continual_sweep  # noqa: PLC0415
    from plasticity import distributed  # noqa: PLC0415

    replaced = []
    config = config_of(context.flags, context.overrides, replaced)
    plan = continual_sweep.plan_experiment(config)  # every check before anything is written
    unused = continual_config.unused_data_dir(continual_config.variant_configs(config))
    context.note([*replaced, *([unused] if unused else [])])
    distributed.agree_to_start()  # every process planned the experiment: none refused it
    return continual_sweep.run_experiment(
        config, context.workdir, plan=plan, **context.run_options()
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the launcher on ``argv`` (default: the command line); returns the exit status."""
    return launch.main(NAME, __doc__, define_flags, run, lambda v: config_of(v, {}), argv)


if __name__ == "__main__":
    launch.exit_after(main())
