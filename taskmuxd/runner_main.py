"""The runner's command line: ``python -I -S runner_main.py SPEC.json [MARKER]``.

It runs :func:`taskmuxd.runner.main` from the compiled module. A script run as ``__main__`` is
compiled from source at every start and never cached, and the compiler's scratch memory stays
with the process: launched as ``runner.py`` directly, each runner keeps about 1 MB more.
It imports no ``os`` (see ``taskmuxd.runpath``): a script's ``__file__`` is absolute.
"""

import sys

if __name__ == "__main__":  # imported (taskmuxd version imports every module): do nothing
    sys.path.insert(0, __file__.rsplit("/", 2)[0])
    from taskmuxd.runner import exit_now, main  # after the path set-up above

    exit_now(main(sys.argv))  # a failure raises: its traceback shows in the pane
