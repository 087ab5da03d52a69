"""Parsing console input into requests: forms, values, multi-line input, errors."""

from __future__ import annotations

import pytest

from dspex_cli.repl.parsing import (CallInput, DefineInput, Empty, MetaInput, ParseError, ProtocolInput,
                                    format_assignments, is_complete, parse, parse_assignments, parse_value,
                                    registry, split_words)


def test_every_registered_command_parses_without_arguments() -> None:
    for name in registry().names(include_aliases=True):
        parsed = parse(name)
        assert isinstance(parsed, ProtocolInput)
        assert parsed.command == registry().get(name).name
        assert parsed.args == {}


def test_key_value_values_are_json_when_they_parse_else_strings() -> None:
    parsed = parse('update_session_data key=k value={"a": [1, 2]} operation=set session_id=s1')
    assert parsed == ProtocolInput("update_session_data",
                                   {"key": "k", "value": {"a": [1, 2]}, "operation": "set", "session_id": "s1"})
    parsed = parse("configure_lm model=openai/gpt-4o-mini temperature=0.5 max_tokens=100 cache=false")
    assert parsed.args == {"model": "openai/gpt-4o-mini", "temperature": 0.5, "max_tokens": 100, "cache": False}


def test_quotes_make_strings_of_anything() -> None:
    parsed = parse("""update_session_data key='3' value="with spaces" operation='set'""")
    assert parsed.args["key"] == "3"
    assert parsed.args["value"] == "with spaces"
    assert parse("update_session_data key='a b c'").args["key"] == "a b c"


def test_dotted_keys_build_nested_objects() -> None:
    parsed = parse('execute_program program_id=qa inputs.question="What is DSPy?" inputs.n=3 options.temperature=0')
    assert parsed.args == {"program_id": "qa", "inputs": {"question": "What is DSPy?", "n": 3},
                           "options": {"temperature": 0}}


def test_json_arguments_go_out_verbatim_including_undeclared_keys() -> None:
    parsed = parse('create_program {"program_id": "x", "signature": "a -> b", "extra": [1]}')
    assert parsed == ProtocolInput("create_program", {"program_id": "x", "signature": "a -> b", "extra": [1]},
                                   verbatim=True)


def test_multi_line_input_is_incomplete_while_brackets_or_quotes_are_open() -> None:
    assert not is_complete('execute_program {"program_id": "qa",')
    assert not is_complete("execute_program inputs.q='unclosed")
    assert not is_complete("ping \\")
    assert is_complete("ping")
    text = 'execute_program {"program_id": "qa",\n "inputs": {"q": "a } inside"}}'
    assert is_complete(text)
    assert parse(text).args == {"program_id": "qa", "inputs": {"q": "a } inside"}}
    assert parse("ping \\\n initialization=true").args == {"initialization": True}


def test_meta_define_and_call_forms() -> None:
    assert parse(":help execute_program") == MetaInput("help", "execute_program")
    assert parse("  :session   s2 ") == MetaInput("session", "s2")
    assert parse("quit") == MetaInput("quit", "")
    assert parse("") == Empty() and parse("# a comment") == Empty()
    assert parse("qa = question, context: list[str] -> answer: int") == \
        DefineInput("qa", "question, context: list[str] -> answer: int")
    assert parse('qa(question="Why?", n=3, tags=["a"], flag=true, nothing=None)') == \
        CallInput("qa", {"question": "Why?", "n": 3, "tags": ["a"], "flag": True, "nothing": None})


@pytest.mark.parametrize("text, message, hint", [
    ("pnig", "Unknown command: pnig", "did you mean 'ping'?"),
    ("execute_progam program_id=x", "Unknown command: execute_progam", "did you mean 'execute_program'?"),
    ("configure_lm modle=mock", "configure_lm has no argument 'modle'", "did you mean 'model'?"),
    ('create_program {"signature": "a -> b"', "Invalid JSON arguments", "check quotes"),
    ('execute_program inputs={"q": 1,}', "Invalid JSON", "single quotes"),
    ("execute_program program_id=a)", "Unbalanced ')'", "brackets"),
    ("ping initialization", "Expected key=value", "name=value"),
    ("qa(1, 2)", "Program inputs must be named", "qa(field="),
    ("qa(q=open('x'))", "not a literal value", "strings, numbers"),
    (":", "needs a meta-command name", ":help"),
])
def test_bad_input_raises_a_clear_error_with_a_suggestion(text: str, message: str, hint: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(text)
    assert message in caught.value.message
    assert hint in (caught.value.suggestion or "")


def test_unknown_argument_lists_the_registry_arguments() -> None:
    with pytest.raises(ParseError) as caught:
        parse("delete_program bogus=1")
    for arg in registry().get("delete_program").arg_names:
        assert arg in caught.value.suggestion


def test_split_words_respects_quotes_and_brackets() -> None:
    assert split_words('a=1 b="x y" c={"k": [1, 2]} d=\'p q\'') == ['a=1', 'b="x y"', 'c={"k": [1, 2]}', "d='p q'"]
    with pytest.raises(ParseError):
        split_words('a="open')


def test_parse_value_kinds() -> None:
    assert parse_value("12") == 12
    assert parse_value("1.5") == 1.5
    assert parse_value("null") is None
    assert parse_value("openai/gpt-4o") == "openai/gpt-4o"
    assert parse_value("'12'") == "12"


def test_format_assignments_reads_back_to_the_same_arguments() -> None:
    args = {"program_id": "qa", "inputs": {"question": "What is 2 + 2?"}, "n": 3, "model": "openai/x",
            "text": "true", "empty": ""}
    assert parse_assignments(split_words(format_assignments(args))) == args


def test_a_whole_request_pasted_from_a_transcript_is_sent_as_it_is() -> None:
    parsed = parse('{"id": 7, "command": "execute_program", "args": {"program_id": "qa", "extra": 1}}')
    assert parsed == ProtocolInput("execute_program", {"program_id": "qa", "extra": 1}, verbatim=True)
    for text, message in (('{bad json', "Invalid JSON"), ('[1, 2]', '"command" string'),
                          ('{"command": "pnig"}', "Unknown command: pnig"),
                          ('{"command": "ping", "args": [1]}', '"args" must be an object')):
        with pytest.raises(ParseError, match=message.replace("[", r"\[")):
            parse(text)
