"""inference/: the pure model library (no Django): audio decoding and speech features, the motion clip
format and its importers, the synthetic demo corpus, torch networks (models/), training, generation,
objective metrics and evaluation. studies/ (tasks, commands) is the only caller that knows the database."""
