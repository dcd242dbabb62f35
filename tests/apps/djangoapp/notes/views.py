import os

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from .models import Note


def index(request):
    notes = Note.objects.order_by("id")
    return render(request, "notes/index.html", {"notes": notes, "pid": os.getpid()})


@csrf_exempt
def add(request):
    if request.method != "POST":
        return HttpResponse("POST only\n", status=405)
    note = Note.objects.create(text=request.POST.get("text", ""))
    return HttpResponse("added %d\n" % note.id, status=201)
