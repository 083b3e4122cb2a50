"""The domain's tables: corpus and utterances, conditions, stimuli (and the jobs and robots that make them),
studies and their versions, participants (sessions), trials, responses, watch records and exclusions.

Rules that span rows live in services.py; reads in selectors.py. Nothing here is ever deleted by the
platform: exclusions and abandoned sessions are states, not deletions.
"""
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: codes are typed by people


def new_completion_code() -> str:
    """A completion code a participant can copy or type: 8 upper-case letters and digits (Prolific-safe)."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))


def new_public_token() -> str:
    """An opaque, unguessable token (128 bits, URL-safe) used in participant-facing URLs and file names."""
    return secrets.token_urlsafe(16)


class Corpus(models.Model):
    name = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    # Where the corpus came from and how it was checked and split: the import report, the split's seed,
    # unit ("speaker" or "utterance") and ratios, so a split can be reproduced and cited.
    import_report = models.JSONField(default=dict, blank=True)
    split_settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "corpora"

    def __str__(self):
        return self.name


class Utterance(models.Model):
    corpus = models.ForeignKey(Corpus, on_delete=models.PROTECT, related_name="utterances")
    name = models.CharField(max_length=120)
    speaker = models.CharField(max_length=80, blank=True)
    transcript = models.TextField(blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    split = models.CharField(max_length=10, blank=True, help_text="train / val / test")
    audio_path = models.CharField(max_length=400, blank=True, help_text="relative to MEDIA_ROOT")
    original_audio_path = models.CharField(max_length=400, blank=True, help_text="the file as imported")
    motion_path = models.CharField(max_length=400, blank=True, help_text="motion clip (.npz), relative to MEDIA_ROOT")
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        unique_together = [("corpus", "name")]
        ordering = ["corpus", "name"]

    def __str__(self):
        return f"{self.corpus}/{self.name}"


class Condition(models.Model):
    """A recipe that yields, for one utterance, motion or a video (see DESIGN.md, Conditions)."""

    class Kind(models.TextChoices):
        GROUND_TRUTH = "ground_truth"
        RANDOM_ALIGNMENT = "random_alignment"
        TIME_SHIFT = "time_shift"
        STILL = "still"
        MODEL = "model"
        UPLOADED = "uploaded"
        ATTENTION_CHECK = "attention_check", "attention check (known answer)"
        AV_CHECK = "av_check", "audio/video check (spoken digits)"

    name = models.SlugField(max_length=80, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    params = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)

    def __str__(self):
        return self.name


class TrainedModel(models.Model):
    """A generator (or inverse) model trained on a corpus: its checkpoint, progress and held-out metrics."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        TRAINING = "training"
        DONE = "done"
        FAILED = "failed"

    name = models.SlugField(max_length=80, unique=True, help_text="what conditions refer to: model(name)")
    kind = models.CharField(max_length=30, help_text="separate, joint, forked, glow, apc, audio2landmark, inverse")
    corpus = models.ForeignKey(Corpus, on_delete=models.PROTECT, related_name="trained_models")
    config = models.JSONField(default=dict, blank=True, help_text="overrides of the model's defaults")
    init_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                  help_text="a checkpoint whose matching weights start this one (e.g. APC)")
    pairs_path = models.CharField(max_length=400, blank=True,
                                  help_text="inverse models: command/landmark pairs (.npz), relative to MEDIA_ROOT")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.JSONField(default=dict, blank=True, help_text="stage, epoch, losses, fraction done")
    checkpoint_path = models.CharField(max_length=400, blank=True, help_text="relative to MEDIA_ROOT")
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.kind} on {self.corpus})"


class Embodiment(models.TextChoices):
    AVATAR = "avatar"
    ROBOT_SIM = "robot_sim"
    ROBOT_PHYSICAL = "robot_physical"


class Stimulus(models.Model):
    """One video: condition x embodiment x utterance, in one variant (the render settings it was made with, see
    studies/variants.py; "" for the defaults). The file name is the public token, never a name."""

    token = models.CharField(max_length=32, unique=True, default=new_public_token, editable=False)
    utterance = models.ForeignKey(Utterance, on_delete=models.PROTECT, related_name="stimuli")
    condition = models.ForeignKey(Condition, on_delete=models.PROTECT, related_name="stimuli")
    embodiment = models.CharField(max_length=20, choices=Embodiment.choices, default=Embodiment.AVATAR)
    variant = models.CharField(max_length=40, blank=True, default="", db_index=True,
                               help_text="key of the render settings it was made with; empty for the defaults")
    file = models.CharField(max_length=400, help_text="path relative to MEDIA_ROOT")
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField(default=0)
    duration_s = models.FloatField()
    audio_duration_s = models.FloatField(null=True, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    fps = models.FloatField()
    video_codec = models.CharField(max_length=20)
    audio_codec = models.CharField(max_length=20, blank=True)
    is_placeholder = models.BooleanField(
        default=False, help_text="A clip made with ffmpeg + espeak-ng until rendered stimuli exist."
    )
    # For attention checks: the answer the clip asks for, e.g. {"value": 1}.
    expected_answer = models.JSONField(null=True, blank=True)
    recipe = models.JSONField(default=dict, blank=True, help_text="seed and every choice, to rebuild it")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "stimuli"
        constraints = [
            models.UniqueConstraint(
                fields=["utterance", "condition", "embodiment", "variant"], name="one_stimulus_per_cell"
            )
        ]

    def __str__(self):
        variant = f"/{self.variant}" if self.variant else ""
        return f"{self.token} ({self.condition}/{self.embodiment}/{self.utterance.name}{variant})"


class RenderJob(models.Model):
    """The making of one stimulus (utterance × condition × embodiment, in one variant of render settings): its
    state, so researchers see progress and failures, and a failed render can be retried. Done jobs point at
    their stimulus."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RENDERING = "rendering"
        DONE = "done"
        FAILED = "failed"

    utterance = models.ForeignKey(Utterance, on_delete=models.PROTECT, related_name="render_jobs")
    condition = models.ForeignKey(Condition, on_delete=models.PROTECT, related_name="render_jobs")
    embodiment = models.CharField(max_length=20, choices=Embodiment.choices)
    variant = models.CharField(max_length=40, blank=True, default="",
                               help_text="the variant of the stimulus it makes (studies/variants.py)")
    settings = models.JSONField(default=dict, blank=True, help_text="render settings and the study's extras")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    stimulus = models.ForeignKey(Stimulus, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    task_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["utterance", "condition", "embodiment", "variant"],
                                    name="one_render_job_per_cell")
        ]

    def __str__(self):
        return f"{self.utterance.name}/{self.condition.name}/{self.embodiment}: {self.status}"


class RobotRecord(models.Model):
    """A robot the hardware worker drives: its profile as it last described itself and its latest calibration
    (`manage.py calibrate_robot`: end-to-end latency and each actuator's response), which captures use to
    place the motion in the recording when the marker is not seen. One row per robot profile name."""

    name = models.CharField(max_length=80, unique=True, help_text="the robot's profile name, e.g. sim-face")
    device = models.CharField(max_length=400, blank=True, help_text="the device string last used (for display)")
    profile = models.JSONField(default=dict, blank=True, help_text="actuators, ranges, speeds, latency")
    calibration = models.JSONField(default=dict, blank=True,
                                   help_text="latency_ms, latency_sd_ms, actuators, measured_at, fps, method")
    calibrated_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        LIVE = "live"
        CLOSED = "closed"

    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Researchers other than the owner, each with a role (StudyMember): what they may see and do here.
    collaborators = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+",
                                           through="StudyMember")
    # Opaque public handle for participant URLs (the slug may carry meaning a participant must not see).
    public_token = models.CharField(max_length=32, unique=True, default=new_public_token, editable=False)
    lab_token = models.CharField(max_length=32, unique=True, default=new_public_token, editable=False)
    completion_code = models.CharField(max_length=32, default=new_completion_code)
    screened_out_code = models.CharField(max_length=32, default=new_completion_code)
    # What the recruiting services know of this study: MTurk HIT ids, qualification type id, ...
    recruiting = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "studies"

    def __str__(self):
        return self.slug

    @property
    def current_version(self):
        return self.versions.order_by("-number").first()


class StudyMember(models.Model):
    """A collaborator's role on one study. Each role may do what the one before it may, and more; the owner
    (and a superuser) may do everything, including choosing the collaborators."""

    class Role(models.TextChoices):
        VIEWER = "viewer", "viewer: dashboard, gallery, preview, finished reports"
        ANALYST = "analyst", "analyst: also the participants' data (responses CSV, admin) and new reports"
        MANAGER = "manager", "manager: also opening and closing, pilot link, renders, new versions of the YAML"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="study_memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        unique_together = [("study", "user")]
        ordering = ["study", "user"]

    def __str__(self):
        return f"{self.user} ({self.role}) on {self.study}"


class StudyVersion(models.Model):
    """An immutable snapshot of a study's YAML. Participants are bound to the version they started."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec_yaml = models.TextField()
    spec = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        unique_together = [("study", "number")]
        ordering = ["study", "number"]

    def __str__(self):
        return f"{self.study.slug} v{self.number}"


class Participant(models.Model):
    """One participant's session in one study."""

    class Source(models.TextChoices):
        MTURK = "mturk"
        PROLIFIC = "prolific"
        LAB = "lab"
        DIRECT = "direct"
        PREVIEW = "preview"
        PILOT = "pilot"
        BOT = "bot"

    class Status(models.TextChoices):
        ACTIVE = "active"
        COMPLETED = "completed"
        ABANDONED = "abandoned"
        SCREENED_OUT = "screened_out"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="participants")
    version = models.ForeignKey(StudyVersion, on_delete=models.PROTECT, related_name="participants")
    source = models.CharField(max_length=10, choices=Source.choices)
    # HMAC-SHA256 of the recruiting service's worker id, keyed with a secret; never the raw id.
    external_id_hash = models.CharField(max_length=64, null=True, blank=True)
    external_session = models.JSONField(default=dict, blank=True, help_text="e.g. assignment / session ids")
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.ACTIVE)
    cell = models.PositiveIntegerField(help_text="Latin-square row (counterbalancing cell)")
    seed = models.BigIntegerField()
    page_index = models.PositiveIntegerField(default=0)
    demographics = models.JSONField(default=dict, blank=True)
    page_data = models.JSONField(default=dict, blank=True, help_text="consent time, A/V-check attempts, ...")
    user_agent = models.CharField(max_length=300, blank=True)
    completion_code = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id_hash"],
                condition=models.Q(external_id_hash__isnull=False),
                name="one_session_per_person_per_study",
            )
        ]
        indexes = [models.Index(fields=["study", "status", "cell"])]

    def __str__(self):
        return str(self.public_id)

    # Previews, pilots and bots (`manage.py run_bots`) run the study like anyone else but are never data: they
    # neither fill the quota nor claim cells from real participants, and exports and reports leave them out
    # unless asked for (`include_pilot`).
    NON_DATA_SOURCES = (Source.PREVIEW, Source.PILOT, Source.BOT)
    # Of those, the ones a researcher uses to try a study that is not open yet (bots take live studies only).
    TRIAL_RUN_SOURCES = (Source.PREVIEW, Source.PILOT)


class Trial(models.Model):
    """One screen with a question about one or more stimuli."""

    class Kind(models.TextChoices):
        TRAINING = "training"
        RATED = "rated"
        ATTENTION = "attention"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_token, editable=False)
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="trials")
    page_index = models.PositiveIntegerField(help_text="index of the study page this trial belongs to")
    position = models.PositiveIntegerField(help_text="order within the participant's session")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    question = models.CharField(max_length=80, help_text="key of the question in the spec")
    first_shown_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    # Made by the client for its answer POST; a retry with the same id is accepted once, not twice.
    submission_id = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["participant", "position"]
        unique_together = [("participant", "position")]

    def __str__(self):
        return f"{self.participant_id}#{self.position}"


class TrialStimulus(models.Model):
    """One video of a trial. The rated ones take slots 0, 1, … (their screen order); a slider trial's open
    reference (ITU-R BS.1534), shown labelled and never rated, takes the slots after them."""

    class Role(models.TextChoices):
        TEST = "test"
        REFERENCE = "reference", "open reference (shown labelled, not rated)"
        HIDDEN_REFERENCE = "hidden_reference"
        ANCHOR = "anchor"

    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="slots")
    stimulus = models.ForeignKey(Stimulus, on_delete=models.PROTECT, related_name="+")
    slot = models.PositiveIntegerField(help_text="screen position, 0 = left/first")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.TEST)
    # The open reference is the same video as the hidden reference among the rated ones, so it is served under
    # a token of its own (one per trial): with the stimulus's token, comparing URLs would find the hidden one.
    token = models.CharField(max_length=32, unique=True, null=True, blank=True, editable=False,
                             help_text="the open reference's own opaque video token; empty for rated videos")

    class Meta:
        ordering = ["trial", "slot"]
        unique_together = [("trial", "slot")]

    @property
    def url_token(self) -> str:
        """The token in this video's URL: its own (the open reference) or its stimulus's."""
        return self.token or self.stimulus.token


class WatchRecord(models.Model):
    """What the participant's player reported for one stimulus in one trial."""

    trial_stimulus = models.OneToOneField(TrialStimulus, on_delete=models.CASCADE, related_name="watch")
    ended = models.BooleanField(default=False)
    ended_at = models.DateTimeField(null=True, blank=True)
    watched_fraction = models.FloatField(default=0.0)
    seeks = models.PositiveIntegerField(default=0)
    pauses = models.PositiveIntegerField(default=0)
    replays = models.PositiveIntegerField(default=0)
    hidden_ms = models.PositiveIntegerField(default=0)
    playback_errors = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)


class Response(models.Model):
    """One rating: one item of one question about one stimulus (or one pair). Never edited, never deleted."""

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="responses")
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="responses")
    item = models.CharField(max_length=80, help_text="question item key, e.g. 'upper'")
    slot = models.PositiveSmallIntegerField(help_text="screen slot of the rated stimulus; 0 for a pair")
    stimulus = models.ForeignKey(
        Stimulus, null=True, blank=True, on_delete=models.PROTECT, related_name="responses",
        help_text="the rated stimulus (likert, slider); for pairwise the chosen one, null for a tie",
    )
    value = models.FloatField(null=True, blank=True)
    choice = models.CharField(max_length=10, blank=True, help_text="pairwise: A, B or tie")
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    answer_ms = models.PositiveIntegerField(help_text="time from the video ending to the answer")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["trial", "item", "slot"], name="one_answer_per_item"),
        ]


class Exclusion(models.Model):
    """A participant's data is excluded from analysis for a stated rule; the data itself stays."""

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="exclusions")
    rule = models.CharField(max_length=40)
    reason = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        unique_together = [("participant", "rule")]

    def __str__(self):
        return f"{self.participant_id}: {self.rule}"


class StudyReport(models.Model):
    """One significance report of a study: a snapshot of its responses analysed and written out (HTML, PDF,
    CSV tables, figures, summary.json) under REPORTS_ROOT, shown to the study's researchers only."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="reports")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    options = models.JSONField(default=dict, blank=True, help_text="analysis settings (correction, rounds, seed…)")
    progress = models.JSONField(default=dict, blank=True, help_text="stage and fraction done")
    folder = models.CharField(max_length=400, blank=True, help_text="relative to REPORTS_ROOT")
    error = models.TextField(blank=True)
    snapshot_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.study.slug} report {self.pk}: {self.status}"
