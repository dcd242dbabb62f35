from django.db import models


class Event(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    host = models.CharField(max_length=100)
    venue = models.CharField(max_length=200)
    country = models.CharField(max_length=2)
    start = models.DateField()
    end = models.DateField()
    attendance = models.PositiveIntegerField(default=0)
    url = models.URLField(blank=True)
    completed = models.BooleanField(default=False)

    class Meta:
        ordering = ["-start", "slug"]

    def __str__(self):
        return self.slug
