"""The serving room's errors: one module, one root, the old import paths still good."""

from __future__ import annotations

import pytest

from prefloop.errors import PrefloopError
from prefloop.serving import assignment, control, exceptions, http, openai_api
from prefloop.serving.backends.exceptions import BackendError
from prefloop.serving.exceptions import ApiError, BodyTooLarge, ServingError, SplitError


@pytest.mark.parametrize("error", [SplitError, ServingError, BodyTooLarge, ApiError])
def test_every_serving_error_is_a_prefloop_error_and_no_backend_error(error: type) -> None:
    assert issubclass(error, PrefloopError)
    assert not issubclass(error, BackendError)
    assert error.__module__ == "prefloop.serving.exceptions"


def test_split_error_stays_a_value_error() -> None:
    assert issubclass(SplitError, ValueError)
    with pytest.raises(ValueError, match="name both model versions"):
        assignment.Split("exp", "", "v2", 10.0)


def test_the_modules_that_raise_them_still_export_them() -> None:
    assert assignment.SplitError is SplitError
    assert control.ServingError is ServingError
    assert http.BodyTooLarge is BodyTooLarge
    assert openai_api.ApiError is ApiError
    assert set(exceptions.__all__) == {"ApiError", "BodyTooLarge", "ServingError", "SplitError"}


def test_the_errors_keep_their_context() -> None:
    too_large = BodyTooLarge(4096, 5000)
    assert (too_large.limit, too_large.size) == (4096, 5000)
    assert str(too_large) == "body of 5000 bytes exceeds the limit of 4096 bytes"
    refused = ApiError(400, "`n` must be 1", param="n")
    assert refused.status == 400
    assert refused.body() == {
        "error": {
            "message": "`n` must be 1",
            "type": "invalid_request_error",
            "param": "n",
            "code": None,
        }
    }


def test_the_tree_in_the_docstring_names_every_class() -> None:
    tree = exceptions.__doc__ or ""
    for name in [*exceptions.__all__, "PrefloopError", "BackendError"]:
        assert name in tree
