"""The API's one error shape, ``{"error": {"code", "message"}}``, built in one place for the
exception handlers (serve/api.py), the upload cap (serve/middleware.py) and the answers the
image files give themselves (serve/images.py)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)
