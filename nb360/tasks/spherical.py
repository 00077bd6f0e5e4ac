"""Placeholder: this task module is being written (it registers nothing yet)."""
