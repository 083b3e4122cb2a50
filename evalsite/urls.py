"""Top-level URLs: the admin, the researcher and participant pages of the studies app, health."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("studies.urls")),
]
