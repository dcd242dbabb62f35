from django.db.models import Count, Sum
from django.shortcuts import render

from .models import Event


def event_list(request):
    # Two queries, like a typical AMY dashboard page: a page of rows and an aggregate.
    events = list(Event.objects.all()[:25])
    stats = Event.objects.aggregate(total=Count("id"), attendance=Sum("attendance"))
    return render(request, "events/list.html", {"events": events, "stats": stats})
