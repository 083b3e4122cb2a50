"""inference/: the pure model library (no Django): audio decoding and speech features, the motion clip
format and its importers, torch networks, training, generation and objective metrics. It is built by the
corpus-and-models issue; the demo study's placeholder clips need none of it yet."""
