"""What every ``vitcop`` command shares on the terminal: parsing helpers, rendering, and how a process ends.

    common.py         the stderr console, ``--debug``, the one-line failure, pre-load checks
    option_types.py   Typer options declared once (``fps: Fps = None``)
    help_format.py    help output tidying for every command group
    report.py         an ``AskResult`` as a rich report (stderr) or JSON (stdout)
    signals.py        SIGTERM / SIGHUP handled like Ctrl-C
    process_exit.py   end the process with the intended status while worker threads run

Used by the front ends (:mod:`vitcop_cli.app`, ``batch/``, ``serve/``, ``profile/``, ``doctor/``);
imports the library and media / models helpers, never a front end.
"""
