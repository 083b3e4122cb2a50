"""render/: the pure rendering library (motion recipes, rigs, video encoding, A/V checks); no Django, no torch."""
