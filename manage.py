#!/usr/bin/env python
"""Django's command-line entry point: `python manage.py demo`, `load_study`, `run_bots`, ..."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
