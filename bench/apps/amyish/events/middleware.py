import os


class WorkerPidMiddleware:
    """Adds X-Worker-Pid so the reload scenario can tell generations apart."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Worker-Pid"] = str(os.getpid())
        return response
