#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")
    from django.core.management import execute_from_command_line

    from panel.env import BadSetting

    try:
        execute_from_command_line(sys.argv)
    except BadSetting as e:  # a bad environment variable: say which, in one line
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
