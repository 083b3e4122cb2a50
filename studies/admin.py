"""Django admin for the domain: browse everything, edit a study's YAML (validated as a new version),
exclude a participant with a reason. Responses are read-only: data are never edited or deleted here."""
from django import forms
from django.contrib import admin, messages

from . import services
from .models import (
    Condition, Corpus, Exclusion, Participant, RenderJob, Response, RobotRecord, Stimulus, Study, StudyVersion,
    TrainedModel, Trial, TrialStimulus, Utterance, WatchRecord,
)
from .spec import SpecError


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

    list_display = ("utterance", "condition", "embodiment", "status", "attempts", "updated_at")
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
    list_display = ("token", "condition", "embodiment", "utterance", "duration_s", "is_placeholder")
    list_filter = ("condition", "embodiment", "is_placeholder")
    search_fields = ("token", "utterance__name")
    readonly_fields = [f.name for f in Stimulus._meta.fields]


class StudyVersionForm(forms.ModelForm):
    class Meta:
        model = StudyVersion
        fields = ["spec_yaml"]
        widgets = {"spec_yaml": forms.Textarea(attrs={"rows": 40, "cols": 100, "style": "font-family: monospace"})}

    def clean_spec_yaml(self):
        text = self.cleaned_data["spec_yaml"]
        try:
            services.study_validate(text=text)
        except SpecError as exc:
            raise forms.ValidationError([str(p) for p in exc.problems]) from None
        return text


class StudyVersionInline(admin.TabularInline):
    model = StudyVersion
    fields = ("number", "created_at")
    readonly_fields = ("number", "created_at")
    extra = 0
    can_delete = False


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("slug", "title", "status", "created_at")
    list_filter = ("status",)
    readonly_fields = ("public_token", "lab_token")
    filter_horizontal = ("collaborators",)
    inlines = [StudyVersionInline]


@admin.register(StudyVersion)
class StudyVersionAdmin(admin.ModelAdmin):
    """Saving an edited YAML makes a new version (validated); old versions stay as they were."""

    form = StudyVersionForm
    list_display = ("study", "number", "created_at")

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
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ("public_id", "study", "source", "status", "cell", "started_at", "completed_at")
    list_filter = ("study", "source", "status")
    readonly_fields = [f.name for f in Participant._meta.fields]
    inlines = [ExclusionInline]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Trial)
class TrialAdmin(ReadOnlyAdmin):
    list_display = ("participant", "position", "kind", "question", "answered_at")


@admin.register(Response)
class ResponseAdmin(ReadOnlyAdmin):
    list_display = ("participant", "trial", "item", "slot", "value", "choice", "answer_ms", "created_at")
    list_filter = ("trial__participant__study",)


@admin.register(Exclusion)
class ExclusionAdmin(admin.ModelAdmin):
    list_display = ("participant", "rule", "reason", "created_at")
    list_filter = ("rule",)

    def has_delete_permission(self, request, obj=None):
        return False


admin.site.register(TrialStimulus, ReadOnlyAdmin)
admin.site.register(WatchRecord, ReadOnlyAdmin)
admin.site.site_header = "Face-motion evaluation: administration"
