"""The teacher opt-in Variable (include/grades/opt_in.py): the forms it takes, and the forms it
refuses with a message that names the Variable and says what it must hold (README "Variables and
pools": a JSON list of IC class sourcedIds, e.g. ["1521311", "1521312"], [] until the first
teacher opts in; nothing is posted on a guess)."""

from __future__ import annotations

import pytest

from include.grades.opt_in import OptInVariableError, opt_in_variable, opted_in_sections

VARIABLE = "oneroster_grade_opt_in_demo"


def test_the_variable_is_named_after_the_district():
    assert opt_in_variable("demo") == VARIABLE
    assert opt_in_variable("acme") == "oneroster_grade_opt_in_acme"


@pytest.mark.parametrize(
    ("stored", "sections"),
    [
        pytest.param('["1521311", "1521312"]', {"1521311", "1521312"}, id="strings"),
        pytest.param("[1521311, 1521312]", {"1521311", "1521312"}, id="ints read as their text"),
        pytest.param('[1521311, "1521312"]', {"1521311", "1521312"}, id="ints and strings"),
        pytest.param('["1521311", "1521311"]', {"1521311"}, id="a repeated id"),
        pytest.param(' [ "1521311" ]\n', {"1521311"}, id="whitespace around the JSON"),
        pytest.param("[]", set(), id="no teacher opted in yet"),
    ],
)
def test_a_json_list_of_sourced_ids_gives_those_sections(stored, sections):
    found = opted_in_sections(VARIABLE, stored)
    assert found == frozenset(sections)
    assert all(isinstance(section, str) for section in found), "sourcedIds are text, as IC serves them"


def assert_refused_naming_the_variable_and_the_form(stored) -> str:
    with pytest.raises(OptInVariableError) as refused:
        opted_in_sections(VARIABLE, stored)
    message = str(refused.value)
    assert VARIABLE in message
    assert "JSON list of IC class sourcedIds" in message, message
    assert '["1521311", "1521312"]' in message, f"the message shows an example of the form: {message}"
    return message


def test_a_missing_variable_is_refused_saying_to_create_it():
    message = assert_refused_naming_the_variable_and_the_form(None)
    assert "does not exist" in message and "create it" in message


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("1521311,1521312", id="not JSON: comma-separated ids"),
        pytest.param("['1521311']", id="not JSON: single quotes"),
        pytest.param("", id="not JSON: empty text"),
        pytest.param('{"sections": ["1521311"]}', id="a JSON object"),
        pytest.param('"1521311"', id="a JSON string"),
        pytest.param("1521311", id="a JSON number"),
        pytest.param("null", id="JSON null"),
        pytest.param("true", id="JSON true"),
    ],
)
def test_a_variable_that_is_not_a_json_list_is_refused(stored):
    assert_refused_naming_the_variable_and_the_form(stored)


@pytest.mark.parametrize(
    ("stored", "positions"),
    [
        pytest.param('["1521311", null]', "1", id="a null entry"),
        pytest.param('["1521311", ""]', "1", id="an empty string"),
        pytest.param('["   ", "1521311"]', "0", id="a blank string"),
        pytest.param('[true, "1521311"]', "0", id="a bool (true)"),
        pytest.param('["1521311", false]', "1", id="a bool (false)"),
        pytest.param('[["1521311"], "1521312"]', "0", id="a nested list"),
        pytest.param('[{"sourcedId": "1521311"}]', "0", id="an object"),
        pytest.param("[1521311.5]", "0", id="a fractional number"),
        pytest.param('[null, "1521311", ""]', "0, 2", id="two bad entries"),
    ],
)
def test_a_list_with_an_entry_that_is_not_a_sourced_id_is_refused_naming_where(stored, positions):
    message = assert_refused_naming_the_variable_and_the_form(stored)
    assert f"positions {positions} " in message, message

