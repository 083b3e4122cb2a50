"""Views: participant pages (participant.py), researcher pages (researcher.py), video serving (media.py)."""
