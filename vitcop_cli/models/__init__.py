"""What a ``--model`` names, before and besides loading it.

    model_ref.py      a ``--model`` argument and its declared ``config.json`` (no torch)
    preset_table.py   ``vitcop presets``: each preset's budgets at a model's depth (no torch)
    demo_models.py    ``tiny:<family>`` / ``bench:<family>``: built offline on first use, cached
    devmodels.py      the dev-model registry: ``make_model(family, dir, size)``, ``make_processor``
    builders/         one random-weight builder per family on a shared ``base`` (never each other)

Depends on the shared vocabulary (errors, catalog, defaults, environment) only; the session
(:mod:`vitcop_cli.session`) loads what these name.
"""
