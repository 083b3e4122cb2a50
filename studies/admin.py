"""Django admin for the domain: browse everything, edit a study's YAML (validated as a new version),
exclude a participant with a reason. Responses are read-only: data are never edited or deleted here.
A researcher who is not a superuser sees only the studies they are on, and participants' rows only of the
studies where their role is analyst or more (selectors.ACTION_ROLE)."""
from django import forms
from django.contrib import admin, messages

from . import selectors, services
from .models import (
    Condition, Corpus, Exclusion, Participant, RenderJob, Response, RobotRecord, Stimulus, Study, StudyMember,
    StudyVersion,
    TrainedModel, Trial, TrialStimulus, Utterance, WatchRecord,
)
from .spec import SpecError


class StudyScoped:
    """Rows limited to the studies on which the user may do `scope_action` (`study_lookup` leads to the study)."""

    study_lookup = "study"
    scope_action = "analyse"

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(**{f"{self.study_lookup}__in": selectors.studies_where(request.user, self.scope_action)})


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Corpus)
class CorpusAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")


@admin.register(Utterance)
class UtteranceAdmin(admin.ModelAdmin):
    list_display = ("name", "corpus", "speaker", "duration_s", "split")
    list_filter = ("corpus", "speaker", "split")
    search_fields = ("name", "transcript")


@admin.register(TrainedModel)
class TrainedModelAdmin(ReadOnlyAdmin):
    """Trained with `manage.py train`; shown here to browse, never edited (the checkpoint is what counts)."""

    list_display = ("name", "kind", "corpus", "status", "updated_at")
    list_filter = ("kind", "status", "corpus")


@admin.register(RenderJob)
class RenderJobAdmin(ReadOnlyAdmin):
    """Made by `manage.py render_study`; failed ones are retried from the study's dashboard."""

    list_display = ("utterance", "condition", "embodiment", "variant", "status", "attempts", "updated_at")
    list_filter = ("status", "embodiment", "condition")


@admin.register(RobotRecord)
class RobotRecordAdmin(ReadOnlyAdmin):
    """Written by `manage.py calibrate_robot` and `manage.py capture`; measured, so shown here, never edited."""

    list_display = ("name", "device", "calibrated_at", "updated_at")
    search_fields = ("name", "device")


@admin.register(Condition)
class ConditionAdmin(admin.ModelAdmin):
    list_display = ("name", "kind")


@admin.register(Stimulus)
class StimulusAdmin(admin.ModelAdmin):
    list_display = ("token", "condition", "embodiment", "utterance", "variant", "width", "height", "duration_s",
                    "is_placeholder")
    list_filter = ("condition", "embodiment", "is_placeholder", "variant")
    search_fields = ("token", "utterance__name")
    readonly_fields = [f.name for f in Stimulus._meta.fields]


class StudyVersionForm(forms.ModelForm):
    class Meta:
        model = StudyVersion
        fields = ["spec_yaml"]
        widgets = {"spec_yaml": forms.Textarea(attrs={"rows": 40, "cols": 100, "style": "font-family: monospace"})}

    user = None  # set by StudyVersionAdmin.get_form

    def clean_spec_yaml(self):
        text = self.cleaned_data["spec_yaml"]
        try:
            spec = services.study_validate(text=text)
        except SpecError as exc:
            raise forms.ValidationError([str(p) for p in exc.problems]) from None
        study = Study.objects.filter(slug=spec["slug"]).first()
        if study is not None and not selectors.user_can(self.user, study, "manage"):
            raise forms.ValidationError(
                f"A study {study.slug!r} exists and your role on it does not allow new versions (manager or "
                f"owner needed). Choose another slug for a new study, or ask its owner for the manager role.")
        return text


class StudyVersionInline(admin.TabularInline):
    model = StudyVersion
    fields = ("number", "created_at")
    readonly_fields = ("number", "created_at")
    extra = 0
    can_delete = False


class StudyMemberInline(admin.TabularInline):
    """The collaborators and their roles; only the owner (or a superuser) may change them."""

    model = StudyMember
    extra = 1
    fields = ("user", "role", "added_at")
    readonly_fields = ("added_at",)

    def _owner(self, request, obj):
        return obj is not None and selectors.user_can(request.user, obj, "share")

    def has_add_permission(self, request, obj=None):
        return self._owner(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._owner(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._owner(request, obj)


@admin.register(Study)
class StudyAdmin(StudyScoped, admin.ModelAdmin):
    study_lookup = "pk"
    scope_action = "view"
    list_display = ("slug", "title", "status", "owner", "created_at")
    list_filter = ("status",)
    readonly_fields = ("public_token", "lab_token")
    inlines = [StudyMemberInline, StudyVersionInline]

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or selectors.user_can(request.user, obj, "manage"))

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or selectors.user_can(request.user, obj, "share"))

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not selectors.user_can(request.user, obj, "share"):
            fields.append("owner")
        return fields


@admin.register(StudyVersion)
class StudyVersionAdmin(StudyScoped, admin.ModelAdmin):
    """Saving an edited YAML makes a new version (validated); old versions stay as they were."""

    scope_action = "view"
    form = StudyVersionForm
    list_display = ("study", "number", "created_at")

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        version, created = services.study_load(text=form.cleaned_data["spec_yaml"], owner=request.user)
        # The admin logs and redirects with `obj`: make it the version the service stored (never an edit).
        obj.__dict__.update({k: v for k, v in version.__dict__.items() if not k.startswith("_")})
        obj._state.adding = False
        if not created:
            messages.info(request, "No change: identical to the latest version.")


class ExclusionInline(admin.TabularInline):
    model = Exclusion
    extra = 0
    can_delete = False
    readonly_fields = ("created_at",)


@admin.register(Participant)
class ParticipantAdmin(StudyScoped, admin.ModelAdmin):
    list_display = ("public_id", "study", "source", "status", "cell", "started_at", "completed_at")
    list_filter = ("study", "source", "status")
    readonly_fields = [f.name for f in Participant._meta.fields]
    inlines = [ExclusionInline]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Trial)
class TrialAdmin(StudyScoped, ReadOnlyAdmin):
    study_lookup = "participant__study"
    list_display = ("participant", "position", "kind", "question", "answered_at")


@admin.register(Response)
class ResponseAdmin(StudyScoped, ReadOnlyAdmin):
    study_lookup = "trial__participant__study"
    list_display = ("participant", "trial", "item", "slot", "value", "choice", "answer_ms", "created_at")
    list_filter = ("trial__participant__study",)


@admin.register(Exclusion)
class ExclusionAdmin(StudyScoped, admin.ModelAdmin):
    study_lookup = "participant__study"
    list_display = ("participant", "rule", "reason", "created_at")
    list_filter = ("rule",)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TrialStimulus)
class TrialStimulusAdmin(StudyScoped, ReadOnlyAdmin):
    study_lookup = "trial__participant__study"


@admin.register(WatchRecord)
class WatchRecordAdmin(StudyScoped, ReadOnlyAdmin):
    study_lookup = "trial_stimulus__trial__participant__study"
admin.site.site_header = "Face-motion evaluation: administration"
