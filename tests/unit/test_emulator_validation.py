"""Request-body validation worded like vLLM's FastAPI/pydantic 400s."""

from __future__ import annotations

import ast
from typing import Any

import pytest

from lora_syncer.emulator import _json
from lora_syncer.emulator.errors import ApiError
from lora_syncer.emulator.validation import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    LOAD_FIELDS,
    chat_before,
    completion_before,
    parse_body,
)


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


def parse(body: dict[str, Any], fields: Any = LOAD_FIELDS, before: Any = None) -> dict[str, Any] | ApiError:
    return parse_body("application/json", _json.dumps(body), fields, before)


def one_problem(result: object) -> tuple[str, str, str]:
    """(type, msg, input) of the single pydantic problem in a validation error."""
    err = error_of(result)
    head, _, problem = str(err["message"]).partition("\n  ")
    assert head == "1 validation error:"
    found = ast.literal_eval(problem)  # the message embeds a Python dict literal, as vLLM's does
    return found["type"], found["msg"], found["input"]


class TestNullable:
    def test_optional_bool_is_not_nullable(self) -> None:
        """`load_inplace` has a default but is not Optional in vLLM: null is a bool_type error."""
        err = error_of(parse({"lora_name": "a", "lora_path": "/p", "load_inplace": None}))
        assert err == {
            "message": "1 validation error:\n  {'type': 'bool_type', 'loc': 'body.load_inplace', "
            "'msg': 'Input should be a valid boolean', 'input': 'None'}",
            "type": "Bad Request",
            "param": "body.load_inplace",
            "code": 400,
        }

    def test_two_nulls_are_two_errors(self) -> None:
        """Null load_inplace and is_3d_lora_weight are reported together, param naming the first."""
        err = error_of(
            parse({"lora_name": "a", "lora_path": "/p", "load_inplace": None, "is_3d_lora_weight": None})
        )
        assert str(err["message"]).startswith("2 validation errors:")
        assert err["param"] == "body.load_inplace"

    def test_required_null_is_a_type_error(self) -> None:
        """A null required string is string_type, not "missing"."""
        assert one_problem(parse({"lora_name": None, "lora_path": "/p"}))[0] == "string_type"

    def test_completion_n_is_not_nullable_but_chat_n_is(self) -> None:
        """vLLM declares completions' `n: int` but chat's `n: int | None`."""
        assert one_problem(parse({"prompt": "x", "n": None}, COMPLETION_FIELDS))[0] == "int_type"
        assert isinstance(parse({"messages": [], "n": None}, CHAT_FIELDS), dict)


class TestLaxCoercion:
    @pytest.mark.parametrize(("raw", "value"), [("3", 3), (" 3 ", 3), ("3.0", 3), (True, 1), (3.0, 3)])
    def test_integers_pydantic_accepts(self, raw: object, value: int) -> None:
        """Numeric strings, integral floats and booleans are integers in pydantic's lax mode."""
        body = parse({"messages": [], "max_tokens": raw}, CHAT_FIELDS)
        assert isinstance(body, dict)
        assert body["max_tokens"] == value

    @pytest.mark.parametrize(
        ("raw", "kind"),
        [(2.5, "int_from_float"), ("3.5", "int_parsing"), ("x", "int_parsing"), ([], "int_type")],
    )
    def test_integers_pydantic_refuses(self, raw: object, kind: str) -> None:
        """Fractions, non-numeric strings and other types get pydantic's error types."""
        assert one_problem(parse({"messages": [], "max_tokens": raw}, CHAT_FIELDS))[0] == kind

    @pytest.mark.parametrize(("raw", "value"), [(1.0, True), (0, False), ("yes", True), ("OFF", False)])
    def test_booleans_pydantic_accepts(self, raw: object, value: bool) -> None:
        """0/1 (also as floats) and the usual words are booleans."""
        body = parse({"lora_name": "a", "lora_path": "/p", "load_inplace": raw})
        assert isinstance(body, dict)
        assert body["load_inplace"] is value

    @pytest.mark.parametrize(
        ("raw", "kind"), [(2, "bool_parsing"), ("1.0", "bool_parsing"), (0.5, "bool_type"), ([], "bool_type")]
    )
    def test_booleans_pydantic_refuses(self, raw: object, kind: str) -> None:
        """Other integers and strings cannot be interpreted; other types are not booleans at all."""
        assert one_problem(parse({"lora_name": "a", "lora_path": "/p", "load_inplace": raw}))[0] == kind


class TestPrompt:
    def test_a_number_fails_every_union_member(self) -> None:
        """A prompt that is neither a string nor a list: one error per member of vLLM's union."""
        err = error_of(parse({"prompt": 5}, COMPLETION_FIELDS))
        message = str(err["message"])
        assert message.startswith("4 validation errors:")
        assert message.count("'loc': 'body.prompt'") == 4
        assert err["param"] == "body.prompt"

    @pytest.mark.parametrize("prompt", ["hi", ["a", "b"], [1, 2]])
    def test_strings_and_lists_pass(self, prompt: object) -> None:
        """Strings and lists are accepted (list items are not checked)."""
        assert isinstance(parse({"prompt": prompt}, COMPLETION_FIELDS), dict)


class TestBeforeChecks:
    @pytest.mark.parametrize(
        "body", [{}, {"prompt": None}, {"prompt": ""}, {"prompt": None, "prompt_embeds": []}]
    )
    def test_completion_without_prompt(self, body: dict[str, Any]) -> None:
        """No usable prompt: vLLM's BadRequestError naming `prompt`."""
        assert error_of(completion_before(body)) == {
            "message": "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
            "type": "BadRequestError",
            "param": "prompt",
            "code": 400,
        }

    def test_completion_with_prompt_or_embeddings(self) -> None:
        """A prompt, or prompt embeddings alone, pass."""
        assert completion_before({"prompt": "hi"}) is None
        assert completion_before({"prompt_embeds": ["x"]}) is None

    def test_chat_null_messages(self) -> None:
        """Null messages fail before any field check, with Python's own TypeError text."""
        assert error_of(chat_before({"messages": None})) == {
            "message": "'NoneType' object is not iterable",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        assert chat_before({}) is None

    def test_before_runs_ahead_of_field_checks(self) -> None:
        """A missing prompt is reported even when other fields are invalid too."""
        err = error_of(parse({"max_tokens": "x"}, COMPLETION_FIELDS, completion_before))
        assert err["type"] == "BadRequestError"

    def test_field_errors_follow_vllm_declaration_order(self) -> None:
        """Several problems are listed in the order vLLM's request model declares its fields."""
        err = error_of(parse({"max_tokens": "x"}, CHAT_FIELDS))
        message = str(err["message"])
        assert message.index("body.messages") < message.index("body.max_tokens")
        assert err["param"] == "body.messages"
