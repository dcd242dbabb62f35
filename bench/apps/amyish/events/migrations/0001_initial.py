from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Event",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("slug", models.SlugField(max_length=100, unique=True)),
                ("host", models.CharField(max_length=100)),
                ("venue", models.CharField(max_length=200)),
                ("country", models.CharField(max_length=2)),
                ("start", models.DateField()),
                ("end", models.DateField()),
                ("attendance", models.PositiveIntegerField(default=0)),
                ("url", models.URLField(blank=True)),
                ("completed", models.BooleanField(default=False)),
            ],
            options={"ordering": ["-start", "slug"]},
        ),
    ]
