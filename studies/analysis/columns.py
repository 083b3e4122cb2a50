"""The header of this platform's response export (one row per rating): written by `studies.selectors.
export_rows` and read back by `studies.analysis.tidy`. Its own module, free of pandas, so the web process can
import it cheaply."""

PLATFORM_COLUMNS = [
    "participant", "source", "status", "excluded", "exclusion_rules", "cell", "trial_position", "trial_kind",
    "question", "question_type", "item", "slot", "stimulus", "condition", "embodiment", "utterance", "speaker",
    "role", "check", "expected", "pair_a", "pair_b", "value", "choice", "strength", "scale_min", "scale_max",
    "answer_ms", "watched_fraction", "seeks", "pauses", "replays", "hidden_ms", "playback_errors", "trial_shown_at",
    "answered_at",
]
