"""Every refusal as JSON ``{"detail": ..., "field": ...}``: never a login page, never a 500
for bad input. The handlers are installed on the API (``api.api``)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from api.auth import TooManyGuesses


class ApiError(Exception):
    """A refusal an endpoint states itself: its status, words and field."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


def _field_of(loc: list) -> str:
    """ninja's error location (``["body", "payload", "port"]``) as the field's name."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "payload", "filters")]
    return ".".join(parts) or "body"


def _refusal(api: NinjaAPI, request: HttpRequest, status: int, detail: str) -> HttpResponse:
    return api.create_response(
        request, {"detail": detail, "field": None, "errors": []}, status=status
    )


def _errors(api: NinjaAPI, request: HttpRequest, status: int, errors: list[dict]) -> HttpResponse:
    first = errors[0] if errors else {"field": None, "message": "Invalid input."}
    detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    body = {"detail": detail, "field": first["field"], "errors": errors}
    return api.create_response(request, body, status=status)


def install(api: NinjaAPI) -> None:
    @api.exception_handler(NinjaValidationError)
    def invalid_input(request, exc: NinjaValidationError):
        errors = [{"field": _field_of(e.get("loc", [])), "message": e["msg"]} for e in exc.errors]
        return _errors(api, request, 422, errors)

    @api.exception_handler(ValidationError)
    def invalid_value(request, exc: ValidationError):
        if hasattr(exc, "error_dict"):
            errors = [
                {"field": "body" if name == "__all__" else name, "message": " ".join(msgs)}
                for name, msgs in exc.message_dict.items()
            ]
        else:
            errors = [{"field": "body", "message": " ".join(exc.messages)}]
        return _errors(api, request, 422, errors)

    @api.exception_handler(HttpError)
    def http_error(request, exc: HttpError):
        """ninja's own refusals (a body that is not JSON: 400) in the same shape."""
        return _refusal(api, request, exc.status_code, f"{exc.message}.".replace("..", "."))

    @api.exception_handler(ApiError)
    def stated(request, exc: ApiError):
        errors = [{"field": exc.field, "message": exc.detail}] if exc.field else []
        body = {"detail": exc.detail, "field": exc.field, "errors": errors}
        return api.create_response(request, body, status=exc.status)

    @api.exception_handler(AuthenticationError)
    def unauthenticated(request, exc):
        body = {
            "detail": "A valid API token is needed: Authorization: Bearer panel_...",
            "field": None,
        }
        response = api.create_response(request, body, status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response

    @api.exception_handler(PermissionDenied)
    def forbidden(request, exc: PermissionDenied):
        return _refusal(api, request, 403, str(exc) or "Your token or your user may not do this.")

    @api.exception_handler(Http404)
    def not_found(request, exc: Http404):
        return api.create_response(
            request, {"detail": str(exc) or "Not found.", "field": None}, status=404
        )

    @api.exception_handler(TooManyGuesses)
    def throttled(request, exc):
        body = {
            "detail": "Too many wrong tokens from this address: wait a few minutes.",
            "field": None,
        }
        response = api.create_response(request, body, status=429)
        response["Retry-After"] = "300"
        return response

    @api.exception_handler(IntegrityError)
    def conflict(request, exc):
        detail = "Another change took this name or row meanwhile."
        body = {"detail": detail, "field": "name", "errors": [{"field": "name", "message": detail}]}
        return api.create_response(request, body, status=409)
