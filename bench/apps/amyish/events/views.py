from django.db.models import Count, Sum
from django.shortcuts import render

from .models import Event


def event_list(request):
    # Two queries, like a typical AMY dashboard page: a page of rows and an aggregate.
    events = list(Event.objects.all()[:25])
    stats = Event.objects.aggregate(total=Count("id"), attendance=Sum("attendance"))
    return render(request, "events/list.html", {"events": events, "stats": stats})


def event_report(request):
    # The heavier page: a filtered page of 50 rows, a GROUP BY per country and
    # a per-row template with filters (dates, numbers, truncation, URLs).
    events = list(Event.objects.filter(attendance__gte=5).order_by("-start", "slug")[:50])
    by_country = list(
        Event.objects.values("country")
        .annotate(n=Count("id"), attendance=Sum("attendance"))
        .order_by("-attendance", "country")
    )
    stats = Event.objects.aggregate(total=Count("id"), attendance=Sum("attendance"))
    return render(request, "events/report.html", {"events": events, "by_country": by_country, "stats": stats})
