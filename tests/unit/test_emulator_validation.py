"""Request-body validation worded like vLLM's FastAPI/pydantic 400s."""

from __future__ import annotations

from lora_syncer.emulator.errors import ApiError
from lora_syncer.emulator.validation import CHAT_FIELDS, LOAD_FIELDS, parse_body


def error_of(result: object) -> dict[str, object]:
    assert isinstance(result, ApiError)
    return result.body()["error"]  # type: ignore[no-any-return]


class TestParseBody:
    def test_valid_body_is_returned_with_coercions(self) -> None:
        """A valid body comes back as a dict, lax booleans coerced, unknown fields kept but ignored."""
        body = parse_body(
            "application/json", b'{"lora_name":"a","lora_path":"/p","load_inplace":"true","x":1}', LOAD_FIELDS
        )
        assert body == {"lora_name": "a", "lora_path": "/p", "load_inplace": True, "x": 1}

    def test_missing_field(self) -> None:
        """A missing required field gives vLLM's message and the field as param."""
        err = error_of(parse_body("application/json", b'{"lora_name":"x"}', LOAD_FIELDS))
        assert err == {
            "message": "1 validation error:\n  {'type': 'missing', 'loc': 'body.lora_path', 'msg': 'Field required', "
            "'input': '<dict of 1 items>'}",
            "type": "Bad Request",
            "param": "body.lora_path",
            "code": 400,
        }

    def test_two_problems_are_counted(self) -> None:
        """Several problems are listed under 'N validation errors', param naming the first."""
        err = error_of(parse_body("application/json", b"{}", LOAD_FIELDS))
        assert str(err["message"]).startswith(
            "2 validation errors:\n  {'type': 'missing', 'loc': 'body.lora_name'"
        )
        assert err["param"] == "body.lora_name"

    def test_invalid_json(self) -> None:
        """A body that is not JSON gives the json_invalid error at body.0."""
        err = error_of(parse_body("application/json", b"notjson", LOAD_FIELDS))
        assert err["message"] == (
            "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.0', 'msg': 'JSON decode error', "
            "'input': '<dict of 0 items>', 'ctx': {'error': 'Expecting value'}}"
        )
        assert err["param"] == "body.0"

    def test_wrong_content_type(self) -> None:
        """A non-JSON content type is refused before the body is read."""
        err = error_of(parse_body("text/plain", b"{}", LOAD_FIELDS))
        assert err == {
            "message": "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
            "type": "Bad Request",
            "param": None,
            "code": 400,
        }

    def test_content_type_parameters_are_ignored(self) -> None:
        """`application/json; charset=utf-8` is JSON."""
        assert isinstance(
            parse_body("Application/JSON; charset=utf-8", b'{"messages": []}', CHAT_FIELDS), dict
        )

    def test_wrong_types(self) -> None:
        """Wrong types are reported with pydantic's type names."""
        err = error_of(
            parse_body("application/json", b'{"lora_name":1,"lora_path":"p","load_inplace":[]}', LOAD_FIELDS)
        )
        message = str(err["message"])
        assert "'type': 'string_type', 'loc': 'body.lora_name'" in message
        assert "'type': 'bool_type', 'loc': 'body.load_inplace'" in message

    def test_body_must_be_an_object(self) -> None:
        """A JSON array body is refused as a whole."""
        err = error_of(parse_body("application/json", b"[1]", LOAD_FIELDS))
        assert err["param"] == "body"

    def test_optional_null_is_allowed(self) -> None:
        """Optional fields may be null."""
        body = parse_body("application/json", b'{"messages":[],"max_tokens":null,"model":null}', CHAT_FIELDS)
        assert isinstance(body, dict)
