from django.urls import path

from events import views

urlpatterns = [
    path("", views.event_list, name="event-list"),
    # The heavier page: more rows, a grouped aggregate, a template with loops and filters.
    path("report/", views.event_report, name="event-report"),
]
