"""The organization SDK: export a torch model as a task package (needs the ``org`` extra).

Only this package imports torch; the vault side (``agents/package.py``, ``agents/validator.py``,
the runner) never does.
"""
